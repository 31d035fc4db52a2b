# bash completion for etherctl(8)                                    -*- shell-script -*-
#
# Completes the commands and options (tests/schema/test_docs.py checks these lists against
# `etherctl --help`), the device names of the site file given on the command line (--device),
# network namespaces (--netns), --color's values, a few durations for --confirm-within and
# site files (*.json; not for confirm, which takes none).
# Plain bash and awk: no jq or python at completion time.

_etherctl_commands="validate plan apply destroy status watch confirm"
_etherctl_options="-h --help --version --json --device --netns --wait --detailed-exitcodes --color --listen --interval --debounce --confirm-within --respect-revert --vici-uri --swanctl-dir --ipsec-wait"
_etherctl_value_options="--device --netns --color --listen --interval --debounce --confirm-within --vici-uri --swanctl-dir --ipsec-wait"

# Prints the device names of a site file, one a line: the keys of the top-level "devices"
# object. A small JSON tokenizer (strings, braces, brackets, colons, commas) is all it needs;
# device names are letters, digits, '.', '_' and '-', so escapes are kept as written.
_etherctl_devices() {
  [[ -f $1 && -r $1 ]] || return 0
  awk '
    {
      n = length($0)
      for (i = 1; i <= n; i++) {
        c = substr($0, i, 1)
        if (c == "\"") {
          s = ""
          for (i++; i <= n; i++) {
            c = substr($0, i, 1)
            if (c == "\\") { s = s substr($0, i, 2); i++; continue }
            if (c == "\"") break
            s = s c
          }
          pending = s; have = 1
        } else if (c == ":") {
          if (have) {
            key[depth] = pending
            if (depth == 2 && key[1] == "devices") print pending
          }
          have = 0
        } else if (c == "{" || c == "[") {
          depth++; key[depth] = ""; have = 0
        } else if (c == "}" || c == "]") {
          depth--; have = 0
        } else if (c == ",") {
          have = 0
        }
      }
    }' "$1" 2>/dev/null
}

_etherctl() {
  local cur=${COMP_WORDS[COMP_CWORD]} opt="" i word command="" site="" skip=0
  COMPREPLY=()

  # "--device=dc1" arrives as "--device" "=" "dc1" (COMP_WORDBREAKS has "=").
  if ((COMP_CWORD >= 1)); then
    if [[ $cur == "=" ]]; then
      opt=${COMP_WORDS[COMP_CWORD - 1]}
      cur=""
    elif ((COMP_CWORD >= 2)) && [[ ${COMP_WORDS[COMP_CWORD - 1]} == "=" ]]; then
      opt=${COMP_WORDS[COMP_CWORD - 2]}
    else
      opt=${COMP_WORDS[COMP_CWORD - 1]}
    fi
  fi

  # The command and the site file, wherever they are on the line (not the word being
  # completed, not option values).
  for ((i = 1; i < ${#COMP_WORDS[@]}; i++)); do
    word=${COMP_WORDS[i]}
    if ((skip)); then
      skip=0
      [[ $word == "=" ]] && skip=1
      continue
    fi
    ((i == COMP_CWORD)) && continue
    case $word in
      --device | --netns | --color | --listen | --interval | --debounce | --confirm-within) skip=1 ;;
      -*) ;;
      *)
        if [[ -z $command ]]; then
          command=$word
        elif [[ -z $site ]]; then
          site=$word
        fi
        ;;
    esac
  done
  [[ $site == "~/"* ]] && site=$HOME/${site#"~/"}

  case $opt in
    --device)
      mapfile -t COMPREPLY < <(compgen -W "$(_etherctl_devices "$site")" -- "$cur")
      return 0
      ;;
    --netns)
      mapfile -t COMPREPLY < <(compgen -W "$(command ls /run/netns 2>/dev/null)" -- "$cur")
      return 0
      ;;
    --color)
      mapfile -t COMPREPLY < <(compgen -W "auto always never" -- "$cur")
      return 0
      ;;
    --confirm-within)
      mapfile -t COMPREPLY < <(compgen -W "60s 2m 5m" -- "$cur")
      return 0
      ;;
  esac

  if [[ $cur == -* ]]; then
    mapfile -t COMPREPLY < <(compgen -W "$_etherctl_options" -- "$cur")
  elif [[ -z $command ]]; then
    mapfile -t COMPREPLY < <(compgen -W "$_etherctl_commands" -- "$cur")
  elif [[ -z $site && $command != confirm ]]; then
    compopt -o filenames 2>/dev/null
    # Directories and *.json files, one a line (names with spaces stay whole).
    mapfile -t COMPREPLY < <(compgen -d -- "$cur"; compgen -f -X '!*.json' -- "$cur")
  fi
  return 0
}

complete -F _etherctl etherctl
