"""How etherctl is built by a user or a packager (`cmake -DCMAKE_BUILD_TYPE=Release`) and by
the developers and CI (the CMake presets): warnings are errors only in the latter.

A plain configure must not turn warnings into errors: a newer compiler's new warning (or an
optimiser's false positive) would break every user's build. The developers' presets and CI
(scripts/test.sh builds the "release" preset as well, -O3 with warnings as errors, so that a
Release build stays warning-free) switch ETHERCTL_WERROR on.
"""

import json
import pathlib
import shutil
import subprocess
import tempfile
import unittest

SOURCE = pathlib.Path(__file__).resolve().parents[2]


def configure(build, *args):
    result = subprocess.run(["cmake", "-S", str(SOURCE), "-B", str(build), "-G", "Ninja", *args],
                            capture_output=True, text=True, timeout=240)
    if result.returncode != 0:
        raise AssertionError(result.stdout + result.stderr)
    commands = json.loads((build / "compile_commands.json").read_text())
    cache = "\n".join(line for line in (build / "CMakeCache.txt").read_text().splitlines()
                      if line.startswith("ETHERCTL_"))
    return commands, cache


@unittest.skipUnless(shutil.which("cmake") and shutil.which("ninja"), "needs cmake and ninja")
class BuildDefaults(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="etherctl-build-")
        self.addCleanup(self.tmp.cleanup)
        self.build = pathlib.Path(self.tmp.name)

    def test_plain_release_configure_has_no_werror(self):
        commands, cache = configure(self.build, "-DCMAKE_BUILD_TYPE=Release")
        self.assertRegex(cache, r"(?m)^ETHERCTL_WERROR:BOOL=OFF$", "ETHERCTL_WERROR is not OFF")
        self.assertTrue(commands)
        for command in commands:
            self.assertNotIn("-Werror", command["command"], command["file"])
            self.assertIn("-Wall", command["command"], command["file"])

    def test_werror_option_turns_it_on(self):
        commands, _ = configure(self.build, "-DCMAKE_BUILD_TYPE=Release", "-DETHERCTL_WERROR=ON")
        for command in commands:
            self.assertIn("-Werror", command["command"], command["file"])

    def test_developer_and_ci_presets_treat_warnings_as_errors(self):
        presets = json.loads((SOURCE / "CMakePresets.json").read_text())
        configure_presets = {p["name"]: p for p in presets["configurePresets"]}
        for name in ("default", "sanitize", "release"):
            with self.subTest(preset=name):
                self.assertEqual(configure_presets[name]["cacheVariables"].get("ETHERCTL_WERROR"),
                                 "ON")
        self.assertEqual(configure_presets["release"]["cacheVariables"]["CMAKE_BUILD_TYPE"],
                         "Release")
        # CI builds it (scripts/test.sh), so that -O3 stays free of warnings.
        self.assertIn("scripts/build.sh release", (SOURCE / "scripts/test.sh").read_text())


if __name__ == "__main__":
    unittest.main()
