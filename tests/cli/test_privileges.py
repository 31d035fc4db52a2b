"""Least privilege: what etherctl can do with which capabilities (setpriv, util-linux).

etherctl-reconcile.service and etherctl-watch.service grant CAP_NET_ADMIN, CAP_BPF and
CAP_SYS_ADMIN (as uid 0, so the files under /run/etherctl and /sys/fs/bpf are its own).
These tests run the whole life cycle (apply with a tunnel, plan, status, a change, a revert
of `apply --confirm-within`, confirm, destroy) with exactly those, and show what each one is
needed for."""
import json
import os
import subprocess
import time
import unittest

from test_crash import CrashBase
from test_confirm import TIME_FACTOR, pending_path, wait_until, within

SETPRIV = "/usr/bin/setpriv"
NSENTER = "/usr/bin/nsenter"


def capabilities(*names):
    """setpriv arguments: only these capabilities (as root: the bounding set decides)."""
    return [SETPRIV, "--bounding-set", "-all," + ",".join("+" + n for n in names), "--"]


class PrivilegeTest(CrashBase):
    def setUp(self):
        if not (os.access(SETPRIV, os.X_OK) and os.access(NSENTER, os.X_OK)):
            raise unittest.SkipTest("needs setpriv and nsenter (util-linux)")
        super().setUp()

    def run_with(self, caps, verb, target, *extra, inside=False):
        """etherctl with only `caps`; `inside`: started in the namespace (nsenter) instead of
        entering it itself with --netns (setns needs CAP_SYS_ADMIN)."""
        command = self.command(verb, target, *extra)
        if inside:
            command.remove("--netns")
            command.remove(self.ns.name)
            command = [NSENTER, f"--net=/run/netns/{self.ns.name}", *capabilities(*caps),
                       *command]
        else:
            command = [*capabilities(*caps), *command]
        return subprocess.run(command, capture_output=True, text=True, env=self.env())

    def life_cycle(self, caps, inside=False):
        def ok(verb, target, *extra, expect=0):
            result = self.run_with(caps, verb, target, *extra, inside=inside)
            self.assertEqual(result.returncode, expect,
                             f"{verb} {target} with {caps}:\n{result.stdout}\n{result.stderr}")
            return result

        ok("apply", "A")
        reference = self.world()
        self.assertIsNotNone(reference["pins"])
        ok("plan", "A", "--detailed-exitcodes")
        self.assertIn("tunnel", ok("status", "A").stdout)
        ok("apply", "B")
        result = ok("apply", "A", "--json", "--confirm-within", within(1))
        pid = json.loads(result.stdout)["pending_confirmation"]["waiter_pid"]
        wait_until(lambda: not os.path.exists(pending_path(self)) and
                   not os.path.exists(f"/proc/{pid}"), 15 * TIME_FACTOR, "the revert")
        ok("plan", "B", "--detailed-exitcodes")
        ok("apply", "A", "--confirm-within", "30s")
        ok("confirm", "A")  # (without the site file: see command())
        self.assertEqual(self.world(), reference)
        ok("destroy", "A")
        self.assertIsNone(self.world()["pins"])

    def command(self, verb, target, *extra):
        command = super().command(verb, target, *extra)
        return command[:-1] if verb == "confirm" else command  # confirm takes no site file

    def test_net_admin_bpf_sys_admin_suffice(self):
        self.life_cycle(["net_admin", "bpf", "sys_admin"])

    def test_without_sys_admin_inside_the_namespace(self):
        # Started inside the namespace (no setns) with CAP_PERFMON for the verifier instead of
        # CAP_SYS_ADMIN: everything works, and another namespace's pins stay (listing the
        # programs that use them needs CAP_SYS_ADMIN; without it they used to be collected as
        # orphans).
        _, others = self.apply_in_another_namespace("A")
        self.assertTrue(os.path.isdir(others))
        pins = sorted(os.listdir(others))
        self.assertIn("tunnels", pins)
        self.life_cycle(["net_admin", "bpf", "perfmon"], inside=True)
        self.assertEqual(sorted(os.listdir(others)), pins)

    def test_what_fails_without_each_capability(self):
        cases = {
            ("bpf", "sys_admin"): "Operation not permitted",  # the first change
            ("net_admin", "bpf"): 'cannot enter network namespace "' + self.ns.name +
                                  '": Operation not permitted',
        }
        for caps, message in cases.items():
            with self.subTest(without=caps):
                result = self.run_with(caps, "apply", "A")
                self.assertEqual(result.returncode, 1, result.stderr)
                self.assertIn(message, result.stderr)
        # Inside the namespace, without CAP_PERFMON or CAP_SYS_ADMIN, the verifier refuses the
        # programs (EACCES, or E2BIG where it also walks speculative paths): an error that
        # names the missing capability, and the apply is rolled back.
        before = self.world()
        result = self.run_with(("net_admin", "bpf"), "apply", "A", inside=True)
        self.assertEqual(result.returncode, 1)
        self.assertIn("loading the EtherIP BPF programs", result.stderr)
        self.assertIn("only with CAP_PERFMON or CAP_SYS_ADMIN besides CAP_BPF", result.stderr)
        self.assertEqual(self.world(), before)
        # CAP_BPF adds nothing to CAP_SYS_ADMIN (which implies it for bpf()).
        self.life_cycle(["net_admin", "sys_admin"])


if __name__ == "__main__":
    unittest.main()
