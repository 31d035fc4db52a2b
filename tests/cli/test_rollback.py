"""All-or-nothing apply: a failure at any step leaves the kernel exactly as it was.

The test-only hook ETHERCTL_TEST_FAIL_AT_STEP=k makes the k-th change of the plan fail; for
every k of a realistic plan the namespace must read back identical before and after."""
import copy
import json
import os
import unittest

from netns import sh
from test_cli import SITE, CliBase


def changed_site():
    """A second generation of SITE: creates, modifies and deletes of every kind."""
    site = copy.deepcopy(SITE)
    device = site["devices"]["dc1"]
    device["vlan_groups"]["vmotion"]["mtu"] = 1400                 # modify a bridge
    device["vlans"]["backup"] = {"interface": "eth2"}               # adopt another interface
    device["vlan_groups"]["storage"] = {"members": ["backup"]}      # create a bridge + port
    del device["self_ips"]["server-v6"]                             # delete an address
    device["self_ips"]["storage-self"] = {"address": "10.2.0.1/24", "vlan": "storage"}
    device["routes"]["to-dc2"]["gateway"] = "198.51.100.253"       # modify a route
    del device["routes"]["to-dc2-v6"]                               # delete a route
    device["routes"]["to-dc3"] = {"destination": "192.0.2.0/24", "vlan": "storage"}
    return site


class RollbackTest(CliBase):
    def setUp(self):
        super().setUp()
        self.ns.ip("link", "add", "eth2", "type", "veth", "peer", "name", "bak-peer")

    def fail_at_every_step(self, site):
        steps = len(json.loads(self.etherctl("--json", "plan", site=site).stdout)["changes"])
        self.assertGreater(steps, 5)
        for step in range(steps):
            with self.subTest(step=step):
                before = self.ns.state()
                report = self.apply_json(expect=1, site=site,
                                         env={"ETHERCTL_TEST_FAIL_AT_STEP": str(step)})
                self.assertEqual(report["failed_step"], step)
                self.assertTrue(report["rolled_back"])
                self.assertEqual(len(report["errors"]), 1, report["errors"])  # undo was clean
                self.assertIn("injected failure", report["errors"][0]["message"])
                self.assertEqual(self.ns.state(), before)
        return steps

    def test_failure_at_any_step_of_a_first_apply_changes_nothing(self):
        self.fail_at_every_step(self.site)

    def test_failure_at_any_step_of_a_change_restores_the_previous_generation(self):
        self.apply_json()
        # Foreign objects around ours must survive the rollbacks too.
        self.ns.ip("link", "add", "vnet0", "type", "veth", "peer", "name", "vnet0-vm")
        self.ns.ip("link", "set", "vnet0", "master", "vmotion")
        steps = self.fail_at_every_step(changed_site())
        # And without the fault the change goes through and verifies.
        report = self.apply_json(site=changed_site())
        self.assertEqual(len(report["changes"]), steps)
        self.assertFalse(self.apply_json(site=changed_site())["changed"])

    def test_failed_destroy_restores_everything(self):
        self.apply_json()
        before = self.ns.state()
        result = self.etherctl("--json", "destroy", expect=1,
                               env={"ETHERCTL_TEST_FAIL_AT_STEP": "5"})
        self.assertTrue(json.loads(result.stdout)["rolled_back"])
        self.assertEqual(self.ns.state(), before)


if __name__ == "__main__":
    unittest.main()
