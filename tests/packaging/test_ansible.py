"""The Ansible module packaging/ansible/library/etherctl.py with Debian's ansible-core, against
localhost inside a throwaway network namespace: check mode, apply, idempotent re-run, diff
mode, a failing apply, and state=absent.

Needs root (network namespaces), ansible-core and ETHERCTL (the binary under test). The
documentation tests (ModuleDocumentation) need neither root nor etherctl: ansible-doc renders
the module, and its DOCUMENTATION, EXAMPLES and RETURN blocks (read with a YAML parser) list
exactly the module's options (its real argument_spec) and the values it returns (the module run
against a stand-in etherctl).
"""

import importlib.util
import json
import os
import pathlib
import shutil
import stat
import subprocess
import sys
import tempfile
import unittest
import uuid

import yaml

SOURCE = pathlib.Path(__file__).resolve().parents[2]
LIBRARY = SOURCE / "packaging" / "ansible" / "library"
ETHERCTL = os.environ.get("ETHERCTL")

# Untagged VLANs only: tagged ones need 8021q, which not every host kernel has.
SITE = {
    "etherctl": 1,
    "devices": {"edge": {
        "vlans": {"wan": {"interface": "eth0"}, "servers": {"interface": "eth1"}},
        "vlan_groups": {"vmotion": {"members": ["servers"]}},
        "self_ips": {"wan-self": {"address": "198.51.100.1/24", "vlan": "wan"},
                     "server-self": {"address": "10.1.0.1/24", "vlan": "vmotion"}},
        "routes": {"to-dc2": {"destination": "203.0.113.0/24",
                              "gateway": "198.51.100.254"}},
    }},
}


MODULE = LIBRARY / "etherctl.py"
# What AnsibleModule itself adds to every result (not the module's own return values).
ANSIBLE_ADDED = {"invocation", "failed", "msg", "warnings", "deprecations"}


def module_blocks():
    """DOCUMENTATION, EXAMPLES, RETURN and the argument_spec that AnsibleModule gets, from the
    module itself (imported: main() only runs as a script)."""
    spec = importlib.util.spec_from_file_location("etherctl_ansible_module", MODULE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {name: getattr(module, name)
            for name in ("DOCUMENTATION", "EXAMPLES", "RETURN", "ARGUMENT_SPEC")}


def run_module(tmp, args, report, rc=0, check=False, diff=False):
    """Runs the module as Ansible does (python3 module.py ARGS_FILE) with a stand-in etherctl
    that prints `report` and exits `rc`; returns the module's JSON result."""
    fake = tmp / "etherctl"
    fake.write_text("#!/bin/sh\ncat <<'EOF'\n" + json.dumps(report) + "\nEOF\nexit " +
                    str(rc) + "\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    site = tmp / "site.json"
    site.write_text("{}")
    arguments = {"site": str(site), "executable": str(fake), **args,
                 "_ansible_check_mode": check, "_ansible_diff": diff,
                 "_ansible_tmpdir": str(tmp), "_ansible_remote_tmp": str(tmp),
                 "_ansible_keep_remote_files": False}
    args_file = tmp / "args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": arguments}))
    result = subprocess.run([sys.executable, str(MODULE), str(args_file)], capture_output=True,
                            text=True, timeout=60,
                            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    return json.loads(result.stdout)


class ModuleDocumentation(unittest.TestCase):
    def setUp(self):
        self.blocks = module_blocks()
        self.documentation = yaml.safe_load(self.blocks["DOCUMENTATION"])
        self.returns = yaml.safe_load(self.blocks["RETURN"])
        self.tmp = tempfile.TemporaryDirectory(prefix="etherctl-ansible-doc-")
        self.dir = pathlib.Path(self.tmp.name)

    def tearDown(self):
        self.tmp.cleanup()

    @unittest.skipUnless(shutil.which("ansible-doc"), "ansible-core is not installed")
    def test_ansible_doc_renders_the_module(self):
        result = subprocess.run(
            ["ansible-doc", "-t", "module", "etherctl"], capture_output=True, text=True,
            timeout=120, env={**os.environ, "ANSIBLE_LIBRARY": str(LIBRARY),
                              "ANSIBLE_HOME": str(self.dir / "home"), "ANSIBLE_NOCOLOR": "1",
                              "PAGER": "cat"})
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertEqual(result.stderr.strip(), "")
        self.assertIn("> ETHERCTL", result.stdout)
        self.assertIn("reports exactly what changed", " ".join(result.stdout.split()))
        for option in self.documentation["options"]:
            self.assertIn(option, result.stdout)
        for value in self.returns:
            self.assertIn(value, result.stdout)

    def test_documented_options_are_the_argument_spec(self):
        self.assertEqual(self.documentation["module"], "etherctl")
        spec = self.blocks["ARGUMENT_SPEC"]
        options = self.documentation["options"]
        self.assertEqual(sorted(options), sorted(spec))
        for name, documented in options.items():
            with self.subTest(option=name):
                real = spec[name]
                self.assertTrue(documented.get("description"))
                self.assertEqual(documented.get("type", "str"), real.get("type", "str"))
                self.assertEqual(documented.get("required", False), real.get("required", False))
                self.assertEqual(documented.get("default"), real.get("default"))
                self.assertEqual(documented.get("choices"), real.get("choices"))

    def test_examples_use_documented_options_only(self):
        examples = yaml.safe_load(self.blocks["EXAMPLES"])
        self.assertTrue(examples)
        for task in examples:
            with self.subTest(task=task["name"]):
                self.assertLessEqual(set(task["etherctl"]), set(self.documentation["options"]))
                self.assertIn("site", task["etherctl"])

    def returned(self, result):
        return set(result) - ANSIBLE_ADDED

    def test_documented_return_values_are_what_the_module_returns(self):
        report = {"changed": True, "device": "edge", "summary": {"create": 1},
                  "changes": [{"op": "create", "kind": "vlan", "name": "wan", "path": "/x",
                               "before": None, "after": {"mtu": 1500}}],
                  "errors": [], "digest": "sha256:" + "0" * 64}
        documented = set(self.returns)
        for check, diff in ((False, False), (True, False), (False, True), (True, True)):
            with self.subTest(check=check, diff=diff):
                result = run_module(self.dir, {}, report, check=check, diff=diff)
                self.assertNotIn("failed", result, result)
                got = self.returned(result)
                always = {k for k, v in self.returns.items() if v["returned"] == "always"}
                self.assertLessEqual(always, got)
                self.assertLessEqual(got, documented, "returned but not documented")
                self.assertEqual("diff" in got, diff)
        failed = run_module(self.dir, {}, {**report, "changed": False, "errors": [
            {"path": "/devices/edge", "message": "boom"}]}, rc=1)
        self.assertTrue(failed.get("failed"), failed)
        self.assertEqual(failed["msg"], "/devices/edge: boom")
        self.assertLessEqual(self.returned(failed), documented, "returned but not documented")
        self.assertTrue({"rc", "errors", "cmd", "rolled_back"} <= set(failed))
        # Every documented value says when it is returned, and each one is seen above.
        for name, value in self.returns.items():
            with self.subTest(value=name):
                self.assertTrue(value.get("description"))
                self.assertIn("type", value)
                self.assertIn("returned", value)


@unittest.skipUnless(ETHERCTL, "ETHERCTL not set")
@unittest.skipUnless(shutil.which("ansible"), "ansible-core is not installed")
@unittest.skipUnless(os.geteuid() == 0, "needs root for network namespaces")
class AnsibleModule(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="etherctl-ansible-")
        self.dir = pathlib.Path(self.tmp.name)
        self.netns = "eca" + uuid.uuid4().hex[:8]
        subprocess.run(["ip", "netns", "add", self.netns], check=True)
        self.addCleanup(subprocess.run, ["ip", "netns", "del", self.netns])
        for ifname, peer in (("eth0", "p0"), ("eth1", "p1")):
            subprocess.run(["ip", "-n", self.netns, "link", "add", ifname, "type", "veth",
                            "peer", "name", peer], check=True)
        self.site = self.dir / "site.json"
        self.site.write_text(json.dumps(SITE))
        self.env = {**os.environ,
                    "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
                    "ANSIBLE_STDOUT_CALLBACK": "minimal",  # "localhost | CHANGED => {...}"
                    "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3",
                    "ANSIBLE_HOME": str(self.dir / "ansible-home"),
                    "ANSIBLE_LOCAL_TEMP": str(self.dir / "ansible-local"),
                    "ANSIBLE_REMOTE_TEMP": str(self.dir / "ansible-remote"),
                    "ANSIBLE_NOCOLOR": "1",
                    "ANSIBLE_DEPRECATION_WARNINGS": "0",
                    "PYTHONDONTWRITEBYTECODE": "1"}

    def tearDown(self):
        self.tmp.cleanup()

    def module(self, *flags, site=None, **args):
        """Runs the module once; returns the host's result."""
        arguments = {"site": str(site or self.site), "netns": self.netns,
                     "executable": ETHERCTL, **args}
        result = subprocess.run(
            ["ansible", "localhost", "-i", "localhost,", "-c", "local", "-M", str(LIBRARY),
             "-m", "etherctl", "-a", json.dumps(arguments), *flags],
            capture_output=True, text=True, timeout=300, env=self.env)
        # With --diff the diff comes first; then "localhost | STATUS => {json}".
        start = result.stdout.find("localhost | ")
        head, _, body = result.stdout[start:].partition(" => ")
        try:
            output = json.loads(body)
        except ValueError:
            raise AssertionError(f"ansible printed no JSON:\n{result.stdout}\n{result.stderr}")
        self.assertGreaterEqual(start, 0, result.stdout)
        output["failed"] = "FAILED" in head  # the minimal callback prints it in the head
        output["printed_diff"] = result.stdout[:start]
        return output

    def status(self):
        out = subprocess.run([ETHERCTL, "--netns", self.netns, "--json", "status",
                              str(self.site)], capture_output=True, text=True, check=True)
        return json.loads(out.stdout)

    def test_check_apply_rerun_diff_absent(self):
        # Check mode: what would change, and nothing changes.
        check = self.module("--check", "--diff")
        self.assertFalse(check.get("failed"), check)
        self.assertTrue(check["changed"])
        self.assertIn('+  "vlan_group vmotion": {', check["printed_diff"])
        self.assertIn("@@", check["printed_diff"])
        self.assertTrue(self.status()["changes"], "check mode changed the kernel")

        applied = self.module("--diff")
        self.assertFalse(applied.get("failed"), applied)
        self.assertTrue(applied["changed"])
        self.assertEqual(applied["device"], "edge")
        self.assertIn('+  "route to-dc2": {', applied["printed_diff"])
        self.assertEqual(self.status()["changes"], [])

        again = self.module()
        self.assertFalse(again.get("failed"), again)
        self.assertFalse(again["changed"], "a second run must report changed=false")
        self.assertEqual(self.module("--check")["changed"], False)

        # state=absent: check mode first, then for real, then idempotent.
        absent_check = self.module("--check", state="absent")
        self.assertTrue(absent_check["changed"], absent_check)
        self.assertEqual(self.status()["changes"], [])
        absent = self.module(state="absent")
        self.assertFalse(absent.get("failed"), absent)
        self.assertTrue(absent["changed"])
        self.assertFalse(self.module(state="absent")["changed"])
        self.assertFalse(self.module("--check", state="absent")["changed"])

    def run_playbook(self, hosts):
        """Runs examples/ansible/sync-device-group.yml over `hosts` ({name: (device, site)}),
        each host a local connection operating in a network namespace of its own."""
        site = {"etherctl": 1, "devices": {
            "dc1-edge": SITE["devices"]["edge"],
            "dc2-edge": {"vlans": {"wan": {"interface": "eth0"}},
                         "self_ips": {"wan-self": {"address": "203.0.113.1/24",
                                                   "vlan": "wan"}}}}}
        lines = ["[edges]"]
        for name, (device, site_file) in hosts.items():
            netns = f"{self.netns}-{name}"
            subprocess.run(["ip", "netns", "add", netns], check=True)
            self.addCleanup(subprocess.run, ["ip", "netns", "del", netns])
            for ifname, peer in (("eth0", "p0"), ("eth1", "p1")):
                subprocess.run(["ip", "-n", netns, "link", "add", ifname, "type", "veth",
                                "peer", "name", peer], check=True)
            path = self.dir / site_file
            if not path.exists():
                variant = json.loads(json.dumps(site))
                if site_file != "group-site.json":  # an older generation: another self IP
                    variant["devices"]["dc1-edge"]["self_ips"]["server-self"]["address"] = \
                        "10.1.0.5/24"
                path.write_text(json.dumps(variant, indent=1))
            lines.append(f"{name} ansible_connection=local etherctl_device={device} "
                         f"etherctl_netns={netns} etherctl_site={path}")
        inventory = self.dir / "inventory.ini"
        inventory.write_text("\n".join(lines) + "\n")
        return subprocess.run(
            ["ansible-playbook", "-i", str(inventory),
             str(SOURCE / "examples/ansible/sync-device-group.yml"),
             "-e", "ansible_python_interpreter=/usr/bin/python3",
             "-e", "ansible_become=false",  # root already; no sudo on a CI machine
             "-e", f"etherctl_executable={ETHERCTL}"],
            capture_output=True, text=True, timeout=600,
            env={**self.env, "ANSIBLE_LIBRARY": str(LIBRARY),
                 "ANSIBLE_STDOUT_CALLBACK": "default"})

    def test_example_playbook_syncs_a_device_group(self):
        ok = self.run_playbook({"dc1-a": ("dc1-edge", "group-site.json"),
                                "dc1-b": ("dc1-edge", "group-site.json"),
                                "dc2-a": ("dc2-edge", "group-site.json")})
        self.assertEqual(ok.returncode, 0, ok.stdout + ok.stderr)
        self.assertRegex(ok.stdout, r"device dc1-edge: every host runs sha256:[0-9a-f]{64}")
        self.assertRegex(ok.stdout, r"device dc2-edge: every host runs sha256:[0-9a-f]{64}")
        self.assertRegex(ok.stdout, r"the group runs site file sha256:[0-9a-f]{64}")

    def test_example_playbook_names_a_host_with_another_configuration(self):
        bad = self.run_playbook({"dc1-a": ("dc1-edge", "group-site.json"),
                                 "dc1-b": ("dc1-edge", "older-site.json")})
        self.assertNotEqual(bad.returncode, 0, bad.stdout)
        self.assertIn("the hosts of device dc1-edge run different configurations", bad.stdout)
        self.assertRegex(bad.stdout, r"'dc1-a': 'sha256:[0-9a-f]{64}', 'dc1-b': 'sha256:")

    def test_failing_apply_reports_etherctl_message(self):
        bad = self.dir / "bad.json"
        broken = json.loads(json.dumps(SITE))
        broken["devices"]["edge"]["vlans"]["servers"]["mtu"] = 67
        bad.write_text(json.dumps(broken))
        result = self.module(site=bad)
        self.assertTrue(result.get("failed"), result)
        self.assertEqual(result["rc"], 65)
        self.assertIn("/devices/edge/vlans/servers/mtu: 67 is out of range 68..65535",
                      result["msg"])

    def test_failing_kernel_apply_is_rolled_back(self):
        # The route's gateway is not on any connected network: the kernel refuses it.
        broken = json.loads(json.dumps(SITE))
        broken["devices"]["edge"]["routes"]["to-dc2"]["gateway"] = "192.0.2.1"
        bad = self.dir / "unreachable.json"
        bad.write_text(json.dumps(broken))
        result = self.module(site=bad)
        self.assertTrue(result.get("failed"), result)
        self.assertEqual(result["rc"], 1)
        self.assertIn("to-dc2", result["msg"])
        self.assertTrue(result.get("rolled_back"), result)


if __name__ == "__main__":
    unittest.main()
