"""The etherctl Debian package (packaging/CMakeLists.txt): build it with `cpack -G DEB` into a
temporary directory, then check its contents and control data, lintian (no errors), an install
into a throwaway root with dpkg (maintainer scripts included, then remove and purge), the
installed `etherctl --version`, and the systemd units (`systemd-analyze verify`, hardening).

ETHERCTL_BUILD_DIR is the configured and built CMake tree (set by ctest). A real `dpkg -i` on
this machine happens only with ETHERCTL_PACKAGE_REAL_INSTALL=1 (CI), and is purged afterwards.
Needs dpkg-dev (dpkg-shlibdeps), lintian, file, man-db and systemd (systemd-analyze).
"""

import configparser
import gzip
import os
import pathlib
import re
import shutil
import subprocess
import tempfile
import unittest

SOURCE = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("ETHERCTL_BUILD_DIR", SOURCE / "build"))
VERSION = os.environ.get("ETHERCTL_VERSION", "0.1.0")
DEB_VERSION = os.environ.get("ETHERCTL_DEB_VERSION", VERSION + "-1")
REAL_INSTALL = os.environ.get("ETHERCTL_PACKAGE_REAL_INSTALL") == "1"

UNITS = ["etherctl-reconcile.service", "etherctl-reconcile.timer", "etherctl-watch.service"]
EXPECTED = {
    # path: mode
    "usr/sbin/etherctl": 0o755,
    "usr/share/man/man8/etherctl.8.gz": 0o644,
    "usr/share/man/man5/etherctl-site.json.5.gz": 0o644,
    "usr/share/bash-completion/completions/etherctl": 0o644,
    "usr/share/etherctl/site.schema.json": 0o644,
    "usr/share/doc/etherctl/copyright": 0o644,
    "usr/share/doc/etherctl/changelog.Debian.gz": 0o644,
    "usr/share/doc/etherctl/examples/site.json": 0o644,
    "usr/share/doc/etherctl/examples/two-dc/site.json": 0o644,
    "etc/default/etherctl": 0o644,
    "etc/etherctl/": 0o755,
    **{f"lib/systemd/system/{unit}": 0o644 for unit in UNITS},
}
ALLOWED_PREFIXES = ("usr/sbin/", "usr/share/man/", "usr/share/bash-completion/",
                    "usr/share/etherctl/", "usr/share/doc/etherctl/", "usr/share/lintian/",
                    "lib/systemd/system/", "etc/default/", "etc/etherctl/")


def run(*args, **kwargs):
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    kwargs.setdefault("timeout", 600)
    return subprocess.run([str(a) for a in args], **kwargs)


def check(*args, **kwargs):
    result = run(*args, **kwargs)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} exited {result.returncode}:\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def read_unit(path: pathlib.Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # keys are case-sensitive
    parser.read_string(path.read_text())
    return parser


class Package(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not (BUILD / "CPackConfig.cmake").exists():
            raise unittest.SkipTest(f"{BUILD} is not a configured build tree")
        cls.tmp = tempfile.TemporaryDirectory(prefix="etherctl-package-")
        cls.root = pathlib.Path(cls.tmp.name)
        # The compressed pages and changelog are build products; cpack only installs.
        check("cmake", "--build", BUILD, "--target", "etherctl", "etherctl_package_docs")
        out = cls.root / "out"
        check("cpack", "-G", "DEB", "-B", out, "--config", BUILD / "CPackConfig.cmake", cwd=BUILD)
        debs = sorted(out.glob("*.deb"))
        assert len(debs) == 1, debs
        cls.deb = debs[0]
        cls.tree = cls.root / "tree"
        check("dpkg-deb", "-x", cls.deb, cls.tree)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_file_name_and_control(self):
        self.assertEqual(self.deb.name, f"etherctl_{DEB_VERSION}_amd64.deb")
        fields = {}
        for line in check("dpkg-deb", "-f", self.deb).stdout.splitlines():
            if not line.startswith(" ") and ":" in line:
                key, value = line.split(":", 1)
                fields[key] = value.strip()
        self.assertEqual(fields["Package"], "etherctl")
        self.assertEqual(fields["Version"], DEB_VERSION)
        self.assertEqual(fields["Section"], "net")
        self.assertIn("@", fields["Maintainer"])
        # dpkg-shlibdeps ran: the libraries the binary links.
        for library in ("libc6", "libbpf1", "libmnl0", "libstdc++6"):
            self.assertRegex(fields["Depends"], rf"(^|, ){re.escape(library)} \(>= ")

    def test_control_members(self):
        control = self.root / "control"
        check("dpkg-deb", "-e", self.deb, control)
        self.assertEqual((control / "conffiles").read_text().split(), ["/etc/default/etherctl"])
        for script in ("postinst", "prerm", "postrm"):
            with self.subTest(script=script):
                self.assertEqual((control / script).stat().st_mode & 0o777, 0o755)
                check("sh", "-n", control / script)
        md5sums = (control / "md5sums").read_text()
        self.assertIn("usr/sbin/etherctl", md5sums)

    def test_contents(self):
        listing = {}
        for line in check("dpkg-deb", "-c", self.deb).stdout.splitlines():
            parts = line.split(None, 5)
            mode, owner, path = parts[0], parts[1], parts[5]
            path = path.removeprefix("./")
            if not path:
                continue
            self.assertEqual(owner, "root/root", path)
            bits = sum(1 << (8 - i) for i, c in enumerate(mode[1:10]) if c != "-")
            listing[path] = (mode[0], bits)
        for path, mode in EXPECTED.items():
            with self.subTest(path=path):
                self.assertIn(path, listing)
                self.assertEqual(oct(listing[path][1]), oct(mode))
        for path, (kind, bits) in listing.items():
            with self.subTest(path=path):
                if kind == "d":
                    self.assertEqual(bits, 0o755)
                    continue
                self.assertTrue(path.startswith(ALLOWED_PREFIXES), "unexpected file")
                if path != "usr/sbin/etherctl":
                    self.assertEqual(bits, 0o644)
        self.assertFalse([p for p in listing if p.endswith((".o", ".a", ".bpf.o", ".h"))])

    def test_binary_is_stripped_and_runs(self):
        binary = self.tree / "usr/sbin/etherctl"
        self.assertNotIn("not stripped", check("file", binary).stdout)
        result = check(binary, "--version")
        self.assertEqual(result.stdout.strip(), f"etherctl {VERSION}")

    def test_shipped_files_are_the_sources(self):
        self.assertEqual((self.tree / "usr/share/etherctl/site.schema.json").read_bytes(),
                         (SOURCE / "schema/site.schema.json").read_bytes())
        self.assertEqual(
            (self.tree / "usr/share/bash-completion/completions/etherctl").read_bytes(),
            (SOURCE / "packaging/completion/etherctl.bash").read_bytes())
        for page in ("man8/etherctl.8", "man5/etherctl-site.json.5"):
            with self.subTest(page=page):
                packed = self.tree / f"usr/share/man/{page}.gz"
                self.assertEqual(gzip.decompress(packed.read_bytes()),
                                 (SOURCE / "docs/man" / pathlib.Path(page).name).read_bytes())
                # gzip -9n: no name, no time stamp (reproducible), as lintian wants.
                header = packed.read_bytes()[:10]
                self.assertEqual(header[4:8], b"\0\0\0\0")
                self.assertFalse(header[3] & 0x08, "file name stored")
                rendered = check("man", "--warnings", "-l", packed,
                                 env={**os.environ, "MANWIDTH": "80", "MANPAGER": "cat"})
                self.assertEqual(rendered.stderr, "")
                self.assertIn("etherctl", rendered.stdout)

    def test_changelog_and_copyright(self):
        changelog = gzip.decompress(
            (self.tree / "usr/share/doc/etherctl/changelog.Debian.gz").read_bytes()).decode()
        self.assertTrue(changelog.startswith(f"etherctl ({DEB_VERSION}) "), changelog)
        parsed = check("dpkg-parsechangelog", "-l", "-", "-S", "Version", input=changelog)
        self.assertEqual(parsed.stdout.strip(), DEB_VERSION)
        copyright_text = (self.tree / "usr/share/doc/etherctl/copyright").read_text()
        self.assertTrue(copyright_text.startswith("Format: https://www.debian.org/doc/"))

    def test_completion_loads(self):
        script = self.tree / "usr/share/bash-completion/completions/etherctl"
        result = check("bash", "--norc", "--noprofile", "-c",
                       f"source {script} && complete -p etherctl")
        self.assertIn("-F _etherctl etherctl", result.stdout)

    def test_lintian_reports_no_errors(self):
        self.assertTrue(shutil.which("lintian"), "lintian is not installed")
        result = run("lintian", "--tag-display-limit", "0", "-E", self.deb)
        tags = result.stdout.splitlines()
        errors = [t for t in tags if t.startswith("E:")]
        self.assertEqual(errors, [], result.stdout + result.stderr)

    def test_install_remove_purge_in_a_throwaway_root(self):
        root = self.root / "dpkg-root"
        admin = root / "var/lib/dpkg"
        for sub in ("info", "updates", "triggers"):
            (admin / sub).mkdir(parents=True, exist_ok=True)
        (admin / "status").touch()
        (admin / "available").touch()
        dpkg = ["dpkg", f"--root={root}", "--force-script-chrootless", "--force-depends",
                "--force-unsafe-io", f"--log={self.root / 'dpkg.log'}"]
        if os.geteuid() != 0:
            dpkg.append("--force-not-root")
        check(*dpkg, "-i", self.deb)
        status = check(*dpkg, "-s", "etherctl").stdout
        self.assertIn("Status: install ok installed", status)
        self.assertRegex(status, r"Conffiles:\n /etc/default/etherctl [0-9a-f]{32}")
        self.assertEqual(check(root / "usr/sbin/etherctl", "--version").stdout.strip(),
                         f"etherctl {VERSION}")
        self.assertTrue((root / "etc/etherctl").is_dir())
        for path in EXPECTED:
            self.assertTrue((root / path).exists(), path)

        # The administrator's site file and a changed conffile.
        (root / "etc/etherctl/site.json").write_text((SOURCE / "examples/site.json").read_text())
        with open(root / "etc/default/etherctl", "a") as conf:
            conf.write('ETHERCTL_OPTIONS="--device dc1-edge"\n')
        # Upgrade to the same version: the changed conffile stays as the administrator left it.
        check(*dpkg, "--force-confold", "-i", self.deb)
        self.assertIn("--device dc1-edge", (root / "etc/default/etherctl").read_text())

        check(*dpkg, "-r", "etherctl")
        self.assertFalse((root / "usr/sbin/etherctl").exists())
        self.assertTrue((root / "etc/default/etherctl").exists(), "remove keeps conffiles")
        check(*dpkg, "-P", "etherctl")
        self.assertFalse((root / "etc/default/etherctl").exists(), "purge removes conffiles")
        self.assertTrue((root / "etc/etherctl/site.json").exists(),
                        "purge must keep the administrator's site file")
        self.assertNotIn("etherctl", check(*dpkg, "-l").stdout.split("+++-")[-1])

    def unit_copies(self, binary: str):
        """The packaged units, with /usr/sbin/etherctl replaced by `binary` (verify checks that
        ExecStart= programs exist)."""
        directory = self.root / f"units-{abs(hash(binary))}"
        directory.mkdir(exist_ok=True)
        for unit in UNITS:
            text = (self.tree / "lib/systemd/system" / unit).read_text()
            (directory / unit).write_text(text.replace("/usr/sbin/etherctl", binary))
        return [directory / unit for unit in UNITS]

    def verify(self, units):
        result = run("systemd-analyze", "verify", "--man=no", *units)
        # Messages about the host (this may be a container without a running systemd).
        noise = re.compile(r"(Failed to open /dev/tty|sysinit.target|Unit .* not found)")
        messages = [line for line in (result.stdout + result.stderr).splitlines()
                    if line.strip() and not noise.search(line)]
        self.assertEqual(messages, [])
        self.assertEqual(result.returncode, 0, result.stderr)

    def test_systemd_analyze_verify(self):
        self.verify(self.unit_copies(str(self.tree / "usr/sbin/etherctl")))

    @unittest.skipUnless(REAL_INSTALL, "ETHERCTL_PACKAGE_REAL_INSTALL=1 installs on this machine")
    def test_real_dpkg_install(self):
        before = run("dpkg-query", "-W", "-f=${Status}", "etherctl").stdout
        if "install ok installed" in before:
            self.skipTest("etherctl is already installed on this machine; not touching it")
        try:
            check("dpkg", "-i", self.deb, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
            self.assertEqual(check("/usr/sbin/etherctl", "--version").stdout.strip(),
                             f"etherctl {VERSION}")
            self.verify([f"/lib/systemd/system/{unit}" for unit in UNITS])
            self.assertIn("etherctl", check("man", "-w", "etherctl").stdout)
        finally:
            run("dpkg", "-P", "etherctl")
        self.assertFalse(pathlib.Path("/usr/sbin/etherctl").exists())

    def test_units(self):
        units = {u: read_unit(self.tree / "lib/systemd/system" / u) for u in UNITS}
        reconcile = units["etherctl-reconcile.service"]["Service"]
        self.assertEqual(reconcile["Type"], "oneshot")
        self.assertRegex(reconcile["ExecStart"],
                         r"^/usr/sbin/etherctl .*--detailed-exitcodes --respect-revert apply "
                         r"/etc/etherctl/site.json$")
        self.assertEqual(reconcile["SuccessExitStatus"], "2")
        self.assertIn("EXIT_STATUS", reconcile["ExecStopPost"])
        timer = units["etherctl-reconcile.timer"]
        self.assertEqual(timer["Timer"]["OnUnitActiveSec"], "5min")
        self.assertIn("RandomizedDelaySec", timer["Timer"])
        self.assertEqual(timer["Install"]["WantedBy"], "timers.target")
        help_text = check(self.tree / "usr/sbin/etherctl", "--help",
                          env={k: v for k, v in os.environ.items()
                               if not k.startswith("ETHERCTL_")}).stdout
        swanctl = re.search(r"--swanctl-dir TEXT=(\S+)", help_text).group(1)
        watch = units["etherctl-watch.service"]["Service"]
        self.assertEqual(watch["Type"], "notify")
        self.assertRegex(watch["ExecStart"], r"^/usr/sbin/etherctl .*watch /etc/etherctl/site.json$")
        # A failover unit's agent also runs keepalived and taps VRRP (it drops these three
        # itself when the device is in no group); keepalived outlives the agent's restarts.
        failover = {"CAP_NET_RAW", "CAP_SYS_NICE", "CAP_IPC_LOCK"}
        self.assertEqual(watch["KillMode"], "process")
        for service, extra in ((watch, failover), (reconcile, set())):
            caps = {"CAP_NET_ADMIN", "CAP_BPF", "CAP_SYS_ADMIN"} | extra
            self.assertEqual(set(service["CapabilityBoundingSet"].split()), caps)
            self.assertEqual(set(service["AmbientCapabilities"].split()), caps)
            self.assertEqual(service["NoNewPrivileges"], "yes")
            self.assertEqual(service["ProtectSystem"], "strict")
            # ProtectSystem=strict: every directory etherctl writes, with IPsec the connection
            # files and key links under its default --swanctl-dir (from the binary's --help).
            self.assertEqual(set(service["ReadWritePaths"].split()),
                             {"/run/etherctl", "/sys/fs/bpf", f"-{swanctl}/conf.d",
                              f"-{swanctl}/private"})
            self.assertEqual(service["ProtectHome"], "yes")
            self.assertEqual(service["PrivateTmp"], "yes")
            self.assertEqual(set(service["RestrictAddressFamilies"].split()),
                             {"AF_NETLINK", "AF_UNIX", "AF_INET", "AF_INET6"} |
                             ({"AF_PACKET"} if extra else set()))

    def test_hardening_exposure(self):
        for unit in ("etherctl-watch.service", "etherctl-reconcile.service"):
            with self.subTest(unit=unit):
                result = check("systemd-analyze", "security", "--offline=yes", "--no-pager",
                               self.tree / "lib/systemd/system" / unit)
                level = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
                self.assertIsNotNone(level, result.stdout)
                self.assertLess(float(level.group(1)), 4.0, result.stdout)


if __name__ == "__main__":
    unittest.main()
