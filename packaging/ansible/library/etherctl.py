#!/usr/bin/python3
# Ansible module for etherctl: drop this directory in a playbook's library/ (or point
# ANSIBLE_LIBRARY / -M at it). Tested by tests/packaging/test_ansible.py.

DOCUMENTATION = r"""
---
module: etherctl
short_description: Make this host's network match an etherctl site file
description:
  - Runs C(etherctl apply) (I(state=present)) or C(etherctl destroy) (I(state=absent)) for
    this host's device of a site file, and reports exactly what changed.
  - "In check mode runs C(etherctl plan) (present) or C(etherctl status) (absent): nothing is
    changed, the result tells what would change."
  - "With C(--diff), returns C(diff.before) and C(diff.after): the attributes of every object
    that changes, keyed by kind and name."
  - A second run of the same file reports C(changed=false).
options:
  site:
    description: The site file, on the managed host.
    type: path
    required: true
  device:
    description: The device of the site file to act on (default the only one, else the one
      named like the host).
    type: str
  netns:
    description: Operate inside this named network namespace (like C(ip -n)).
    type: str
  state:
    description: C(present) applies the file, C(absent) removes everything etherctl owns for
      the device.
    type: str
    choices: [present, absent]
    default: present
  wait:
    description: Wait for another etherctl run's lock instead of failing.
    type: bool
    default: true
  executable:
    description: The etherctl program.
    type: path
    default: etherctl
author: etherctl maintainers
"""

EXAMPLES = r"""
- name: Apply the site file
  etherctl:
    site: /etc/etherctl/site.json

- name: What would change (nothing is touched)
  etherctl:
    site: /etc/etherctl/site.json
    device: dc1-edge
  check_mode: true
  diff: true
"""

RETURN = r"""
changed:
  description: Whether objects were (or, in check mode, would be) created, changed or deleted.
  type: bool
  returned: always
device:
  description: The device of the site file that was applied.
  type: str
  returned: always
  sample: dc1-edge
changes:
  description: etherctl's changes (op, kind, name, path, before, after).
  type: list
  elements: dict
  returned: always
summary:
  description: Counts of creations, modifications and deletions.
  type: dict
  returned: success
errors:
  description: etherctl's errors (path, message); empty on success.
  type: list
  elements: dict
  returned: always
rc:
  description: etherctl's exit code.
  type: int
  returned: always
digest:
  description: SHA-256 digest of the device's effective configuration (the part of the file
    that applies to it, normalised); equal on every host that applies the same device of the
    same configuration.
  type: str
  returned: success
  sample: sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
site_sha256:
  description: SHA-256 of the site file's bytes; equal on every host that runs the same
    generation of the file.
  type: str
  returned: success
diff:
  description: The attributes of every object that changes (or would change), keyed by kind
    and name; C(before) is the kernel, C(after) the file.
  type: dict
  returned: success, in diff mode
cmd:
  description: The etherctl command that failed.
  type: list
  elements: str
  returned: failure
rolled_back:
  description: Whether etherctl undid the changes of a failed apply.
  type: bool
  returned: failure
"""

import hashlib
import json
import os

from ansible.module_utils.basic import AnsibleModule


ARGUMENT_SPEC = dict(
    site=dict(type="path", required=True),
    device=dict(type="str"),
    netns=dict(type="str"),
    state=dict(type="str", choices=["present", "absent"], default="present"),
    wait=dict(type="bool", default=True),
    executable=dict(type="path", default="etherctl"),
)


def object_key(change):
    return f"{change.get('kind')} {change.get('name')}"


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    p = module.params
    executable = p["executable"]
    if not os.path.isabs(executable):
        executable = module.get_bin_path(executable, required=True)

    command = [executable, "--json"]
    if p["device"]:
        command += ["--device", p["device"]]
    if p["netns"]:
        command += ["--netns", p["netns"]]
    if p["wait"]:
        command.append("--wait")
    if p["state"] == "present":
        verb = "plan" if module.check_mode else "apply"
    else:
        verb = "status" if module.check_mode else "destroy"
    command += [verb, p["site"]]

    rc, out, err = module.run_command(command)
    try:
        report = json.loads(out)
    except ValueError:
        module.fail_json(msg=(err or out or f"etherctl exited {rc}").strip(), rc=rc,
                         cmd=command)

    errors = report.get("errors") or []
    if rc != 0:
        message = "; ".join(f"{e['path']}: {e['message']}" if e.get("path") else e["message"]
                            for e in errors) or (err or f"etherctl exited {rc}").strip()
        module.fail_json(msg=message, rc=rc, errors=errors, cmd=command,
                         changes=report.get("changes", []), device=report.get("device"),
                         rolled_back=report.get("rolled_back", False))

    changes = report.get("changes") or []
    if p["state"] == "absent" and module.check_mode:
        # status: what destroy would delete is everything the device owns.
        objects = (report.get("status") or {}).get("objects") or []
        changes = [{"op": "delete", "kind": o.get("kind"), "name": o.get("name"),
                    "path": o.get("path"), "before": o.get("attrs", {}), "after": None}
                   for o in objects if o.get("owned")]
    if module.check_mode:
        changed = bool(changes)
    else:
        changed = bool(report.get("changed"))

    # The device group's proof of sync: the digest of the device's effective configuration
    # (equal on every host that applies the same device of the same configuration) and the
    # hash of the file itself (equal on every host that runs the same generation of it).
    with open(p["site"], "rb") as f:
        site_sha256 = "sha256:" + hashlib.sha256(f.read()).hexdigest()
    result = dict(changed=changed, device=report.get("device"), changes=changes,
                  summary=report.get("summary"), errors=errors, rc=rc,
                  digest=report.get("digest"), site_sha256=site_sha256)
    if module._diff:
        before, after = {}, {}
        for change in changes:
            if change.get("before") is not None:
                before[object_key(change)] = change["before"]
            if change.get("after") is not None:
                after[object_key(change)] = change["after"]
        result["diff"] = dict(before=json.dumps(before, indent=2, sort_keys=True) + "\n",
                              after=json.dumps(after, indent=2, sort_keys=True) + "\n",
                              before_header=f"{p['site']} ({report.get('device')}): kernel",
                              after_header=f"{p['site']} ({report.get('device')}): file")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
