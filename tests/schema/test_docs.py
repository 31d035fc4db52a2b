"""The man pages and the bash completion cannot drift from etherctl and its schema:

- every option and command of `etherctl --help` and `etherctl <command> --help` is documented
  in etherctl(8) (OPTIONS and COMMANDS), and every exit code of cmd/etherctl/main.cpp in EXIT
  STATUS; the page's version is `etherctl --version`'s;
- every field of schema/site.schema.json is documented in etherctl-site.json(5), in the
  section of its object, with a default (or "Required") and an example;
- both pages render without groff warnings;
- the bash completion offers exactly the commands and options of `etherctl --help`, and the
  device names of the site file on the command line.

ETHERCTL is the binary under test; without it the parts that run it are skipped.
"""

import json
import os
import pathlib
import re
import shutil
import subprocess
import tempfile
import unittest

SOURCE = pathlib.Path(__file__).resolve().parents[2]
MAN8 = SOURCE / "docs" / "man" / "etherctl.8"
MAN5 = SOURCE / "docs" / "man" / "etherctl-site.json.5"
SCHEMA = SOURCE / "schema" / "site.schema.json"
COMPLETION = SOURCE / "packaging" / "completion" / "etherctl.bash"
MAIN = SOURCE / "cmd" / "etherctl" / "main.cpp"
ETHERCTL = os.environ.get("ETHERCTL")

# Objects of the schema (by their place in it) -> the .SS section of etherctl-site.json(5)
# that documents their fields. A new object in the schema must be added here and documented.
SECTIONS = {
    "#": "Top level",
    "#/$defs/device": "Devices",
    "#/$defs/vlan": "VLANs",
    "#/$defs/vlanGroup": "VLAN groups",
    "#/$defs/selfIp": "Self IPs",
    "#/$defs/route": "Routes",
    "#/$defs/pool": "Pools",
    "#/$defs/pool/properties/virtual": "Pool virtual server",
    "#/$defs/poolMember": "Pool members",
    "#/$defs/pool/properties/monitor": "Pool monitor",
    "#/$defs/tunnel": "Tunnels",
    "#/$defs/tunnelEndpoint": "Tunnel endpoints",
    "#/$defs/ipsec": "IPsec",
    "#/$defs/ipsec/properties/proposals": "IPsec proposals",
    "#/$defs/ipsec/properties/lifetimes": "IPsec lifetimes",
    "#/$defs/failoverGroup": "Failover groups",
    "#/$defs/device/properties/failover": "Device failover",
}


def plain(roff: str) -> str:
    """Roff text without font escapes and with plain hyphens."""
    text = re.sub(r"\\f[BIRP]", "", roff)
    text = text.replace("\\-", "-").replace("\\&", "").replace("\\(->", "->")
    return text


def roff_args(line: str) -> list:
    """The arguments of a roff macro line (.B, .BR, ...), quotes resolved."""
    rest = line.split(None, 1)[1] if " " in line else ""
    args, current, quoted, i = [], "", False, 0
    while i < len(rest):
        c = rest[i]
        if quoted and c == '"' and rest[i + 1:i + 2] == '"':
            current += '"'
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        elif c == " " and not quoted:
            if current:
                args.append(current)
            current = ""
        else:
            current += c
        i += 1
    if current:
        args.append(current)
    return args


def man_items(path: pathlib.Path):
    """{(section .SH, subsection .SS): {tag: paragraph}} for every .TP item of a page."""
    items = {}
    section = subsection = None
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith(".SH "):
            section, subsection = plain(" ".join(roff_args(line))), None
        elif line.startswith(".SS "):
            subsection = plain(" ".join(roff_args(line)))
        elif line == ".TP" and i + 1 < len(lines):
            tag_line = lines[i + 1]
            args = roff_args(tag_line) if tag_line.startswith(".") else [tag_line]
            tag = plain(args[0]) if args else ""
            body = []
            j = i + 2
            while j < len(lines) and not re.match(r"\.(TP|SS|SH|PP)\b", lines[j]):
                body.append(lines[j])
                j += 1
            items.setdefault((section, subsection), {})[tag] = plain("\n".join(body))
            for extra in plain(tag_line).split()[1:]:  # ".BR -h , --help": both names
                items[(section, subsection)].setdefault(extra.strip(","), plain("\n".join(body)))
            i = j
            continue
        i += 1
    return items


def etherctl_help(*args):
    result = subprocess.run([ETHERCTL, *args, "--help"], capture_output=True, text=True,
                            timeout=30)
    if result.returncode != 0:
        raise AssertionError(f"etherctl {' '.join(args)} --help exited {result.returncode}")
    return result.stdout


def help_sections(text: str):
    """CLI11 help -> {"Options": [names], "Subcommands": [names], "Positionals": [names]}."""
    sections, current = {}, None
    for line in text.splitlines():
        header = re.match(r"^([A-Z][A-Za-z ]*):\s*$", line)
        if header:
            current = sections.setdefault(header.group(1), [])
            continue
        entry = re.match(r"^  (\S+)", line)
        if current is not None and entry:
            first = entry.group(1)
            for name in first.split(","):
                current.append(name)
    return sections


def subcommands():
    return help_sections(etherctl_help())["Subcommands"]


def every_option():
    """{option: [where]} for the global options and those of each command."""
    options = {}
    for name in help_sections(etherctl_help()).get("Options", []):
        options.setdefault(name, []).append("etherctl")
    for command in subcommands():
        for name in help_sections(etherctl_help(command)).get("Options", []):
            options.setdefault(name, []).append(command)
    return options


@unittest.skipUnless(ETHERCTL, "ETHERCTL not set")
class ManPage8(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.items = man_items(MAN8)

    def test_every_command_is_documented(self):
        commands = self.items.get(("COMMANDS", None), {})
        names = subcommands()
        self.assertGreaterEqual(len(names), 5)
        for name in names:
            with self.subTest(command=name):
                self.assertIn(name, commands)
                self.assertIn(name, MAN8.read_text().split(".SH SYNOPSIS")[1].split(".SH")[0])

    def test_every_option_is_documented(self):
        documented = self.items.get(("OPTIONS", None), {})
        options = every_option()
        self.assertIn("--detailed-exitcodes", options)
        for name, where in options.items():
            with self.subTest(option=name, of=where):
                self.assertIn(name, documented)

    def test_every_command_positional_is_named(self):
        for command in subcommands():
            positionals = help_sections(etherctl_help(command)).get("Positionals", [])
            for name in positionals:
                with self.subTest(command=command, positional=name):
                    self.assertIn(f".BI {command} \" {name}\"", MAN8.read_text())

    def test_every_exit_code_is_documented(self):
        codes = re.findall(r"constexpr int kExit\w+ = (\d+);", MAIN.read_text())
        self.assertGreaterEqual(len(codes), 5)
        documented = self.items.get(("EXIT STATUS", None), {})
        for code in codes:
            with self.subTest(code=code):
                self.assertIn(code, documented)
        self.assertEqual(sorted(documented, key=int), sorted(set(codes), key=int),
                         "EXIT STATUS documents codes main.cpp does not have")

    def test_usage_errors_exit_64(self):
        for args in ([], ["--no-such-option", "validate", "x"], ["no-such-command"],
                     ["validate"]):
            with self.subTest(args=args):
                result = subprocess.run([ETHERCTL, *args], capture_output=True, timeout=30)
                self.assertEqual(result.returncode, 64)

    def test_version_matches_the_pages(self):
        version = subprocess.run([ETHERCTL, "--version"], capture_output=True, text=True,
                                 timeout=30, check=True).stdout.split()[-1]
        for page in (MAN8, MAN5):
            with self.subTest(page=page.name):
                th = next(line for line in page.read_text().splitlines()
                          if line.startswith(".TH "))
                self.assertIn(f'"etherctl {version}"', th)


class ManPage5(unittest.TestCase):
    def test_every_schema_field_is_documented_in_its_section(self):
        schema = json.loads(SCHEMA.read_text())
        items = man_items(MAN5)
        found = {}

        def walk(node, where):
            if not isinstance(node, dict):
                return
            if node.get("properties"):
                found[where] = sorted(node["properties"])
            for key in ("$defs", "properties", "patternProperties"):
                for name, value in node.get(key, {}).items():
                    walk(value, f"{where}/{key}/{name}")
            for key in ("additionalProperties", "items"):
                walk(node.get(key), f"{where}/{key}")
        walk(schema, "#")

        self.assertEqual(sorted(found), sorted(SECTIONS),
                         "objects of the schema and sections of etherctl-site.json(5) differ")
        for where, fields in found.items():
            section = items.get(("FIELDS", SECTIONS[where]), {})
            for field in fields:
                with self.subTest(object=where, field=field):
                    self.assertIn(field, section, f"not documented under {SECTIONS[where]}")
                    text = section[field]
                    self.assertTrue("Default" in text or "Required" in text, text)
                    self.assertIn("Example", text)
            with self.subTest(object=where):
                self.assertEqual(sorted(section), fields, "documented fields the schema lacks")

    def test_enums_and_defaults_of_the_schema_are_in_the_page(self):
        schema = json.loads(SCHEMA.read_text())
        text = plain(MAN5.read_text())
        values = set()

        def walk(node):
            if isinstance(node, dict):
                for value in node.get("enum", []):
                    values.add(str(value))
                if "default" in node and not isinstance(node["default"], (dict, list)):
                    values.add(json.dumps(node["default"]).strip('"'))
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)
        walk(schema)
        for value in sorted(values):
            with self.subTest(value=value):
                self.assertRegex(text, rf"(?<![\w-]){re.escape(value)}(?![\w-])")


class Rendering(unittest.TestCase):
    @unittest.skipUnless(shutil.which("groff"), "groff not installed")
    def test_pages_render_without_warnings(self):
        for page in (MAN8, MAN5):
            with self.subTest(page=page.name):
                result = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(page)],
                                        capture_output=True, text=True, timeout=30)
                self.assertEqual((result.returncode, result.stderr), (0, ""))


def complete(words, cword=None, cwd=None):
    """COMPREPLY of the completion for `words` (the last one is being completed)."""
    cword = len(words) - 1 if cword is None else cword
    line = " ".join(words)
    script = f"""
        source {COMPLETION}
        COMP_WORDS=({' '.join(_quote(w) for w in words)})
        COMP_CWORD={cword}
        COMP_LINE={_quote(line)}
        COMP_POINT=${{#COMP_LINE}}
        _etherctl etherctl {_quote(words[cword])} {_quote(words[cword - 1] if cword else "")}
        printf '%s\\n' "${{COMPREPLY[@]}}"
    """
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent"}
    if ETHERCTL:
        env["PATH"] = str(pathlib.Path(ETHERCTL).parent) + ":" + env["PATH"]
    result = subprocess.run(["bash", "--norc", "--noprofile", "-c", script], capture_output=True,
                            text=True, timeout=30, cwd=cwd, env=env)
    if result.returncode != 0:
        raise AssertionError(result.stderr)
    return sorted(filter(None, result.stdout.splitlines()))


def _quote(word: str) -> str:
    return "'" + word.replace("'", "'\\''") + "'"


class Completion(unittest.TestCase):
    def test_static_lists_match_the_help(self):
        if not ETHERCTL:
            self.skipTest("ETHERCTL not set")
        text = COMPLETION.read_text()
        commands = re.search(r"^_etherctl_commands=\"([^\"]*)\"", text, re.M).group(1).split()
        options = re.search(r"^_etherctl_options=\"([^\"]*)\"", text, re.M).group(1).split()
        self.assertEqual(sorted(commands), sorted(subcommands()))
        self.assertEqual(sorted(options), sorted(every_option()))

    def test_commands_and_options(self):
        self.assertIn("validate", complete(["etherctl", ""]))
        self.assertIn("apply", complete(["etherctl", "--json", "a"]))
        self.assertNotIn("validate", complete(["etherctl", "a"]))
        self.assertIn("--detailed-exitcodes", complete(["etherctl", "--d"]))
        self.assertEqual(complete(["etherctl", "--color", ""]), ["always", "auto", "never"])
        self.assertIn("confirm", complete(["etherctl", "c"]))
        self.assertEqual(complete(["etherctl", "apply", "--confirm-within", "2"]), ["2m"])

    def test_device_names_from_the_site_file(self):
        with tempfile.TemporaryDirectory() as tmp:
            site = pathlib.Path(tmp) / "site.json"
            # Device names anywhere in the file, keys of "devices" only, on odd lines.
            site.write_text('{"etherctl": 1, "tunnels": {"t": {"endpoints": {"x-edge": "1.1.1.1"}}},\n'
                            ' "devices": {\n  "dc1-edge": {"vlans": {"wan": {"interface": "eth0"}}},'
                            '\n  "dc2.edge"\n  : {}, "dc3_x": {"routes": {"r": {"vlan": "a,b"}}}}}\n')
            self.assertEqual(complete(["etherctl", "--device", "", "apply", str(site)], cword=2),
                             ["dc1-edge", "dc2.edge", "dc3_x"])
            self.assertEqual(complete(["etherctl", "plan", str(site), "--device", "dc1"]),
                             ["dc1-edge"])
            self.assertEqual(complete(["etherctl", "plan", str(site), "--device", "=", "dc2"]),
                             ["dc2.edge"])
            self.assertEqual(complete(["etherctl", "plan", str(site), "--device", "="]),
                             ["dc1-edge", "dc2.edge", "dc3_x"])
            examples = SOURCE / "examples" / "two-dc" / "site.json"
            self.assertEqual(complete(["etherctl", "--device", "", "status", str(examples)],
                                      cword=2), ["dc1-edge", "dc2-edge"])

    def test_site_files(self):
        with tempfile.TemporaryDirectory() as tmp:
            (pathlib.Path(tmp) / "site.json").write_text("{}")
            (pathlib.Path(tmp) / "notes.txt").write_text("")
            (pathlib.Path(tmp) / "lab").mkdir()
            self.assertEqual(complete(["etherctl", "apply", ""], cwd=tmp), ["lab", "site.json"])
            self.assertEqual(complete(["etherctl", "apply", "site.json", ""], cwd=tmp), [])
            self.assertEqual(complete(["etherctl", "confirm", ""], cwd=tmp), [])
            self.assertEqual(complete(["etherctl", "apply", "--confirm-within", "2m", ""],
                                      cwd=tmp), ["lab", "site.json"])


class ReadmeFirstCommands(unittest.TestCase):
    """The README's two commands are the first a newcomer types, as root on a fresh Debian 12,
    which has no sudo: they must run as written there."""

    def commands(self):
        readme = (SOURCE / "README.md").read_text()
        section = readme.split("## The two commands", 1)[1].split("\n## ", 1)[0]
        blocks = re.findall(r"```\n(.*?)```", section, re.S)
        return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]

    def test_commands_run_as_root_without_sudo(self):
        commands = self.commands()
        self.assertEqual(len(commands), 2, commands)
        for command in commands:
            with self.subTest(command=command):
                program = command.split()[0]
                self.assertNotEqual(program, "sudo", "a fresh Debian 12 root shell has no sudo")
                script = SOURCE / program
                self.assertTrue(script.is_file(), program)
                self.assertTrue(os.access(script, os.X_OK), f"{program} is not executable")
                self.assertEqual(script.read_text().splitlines()[0], "#!/usr/bin/env bash")

    def test_scripts_they_run_never_call_sudo(self):
        for script in sorted((SOURCE / "scripts").glob("*.sh")):
            with self.subTest(script=script.name):
                code = "\n".join(line for line in script.read_text().splitlines()
                                 if not line.lstrip().startswith("#"))
                self.assertIsNone(re.search(r"(^|[;&|(`]|\$\()\s*sudo\s", code, re.M),
                                  "calls sudo")

    def test_a_non_root_user_is_told_what_to_do(self):
        readme = (SOURCE / "README.md").read_text()
        section = readme.split("## The two commands", 1)[1].split("\n## ", 1)[0]
        self.assertIn("sudo scripts/", section)  # the note for a non-root user with sudo
        # setup.sh, which both run first, stops a non-root user with that advice instead of
        # an apt-get permission error.
        setup = (SOURCE / "scripts" / "setup.sh").read_text()
        self.assertIn("EUID", setup)
        self.assertIn("run it as root", setup)
