"""strongSwan's charon for tests: one instance per network namespace, never outside one.

Each instance gets its own directory (strongswan.conf, swanctl.conf, conf.d/, the VICI socket,
a log file) and a private /run (charon's pid file is hard-wired to /var/run/charon.pid), as
NOTES §8 describes. etherctl is pointed at it with ETHERCTL_VICI_URI and ETHERCTL_SWANCTL_DIR.
"""
import os
import re
import signal
import subprocess
import time

CHARON = "/usr/lib/ipsec/charon"
SWANCTL = "/usr/sbin/swanctl"


def available():
    """'' when charon and swanctl are installed, else why not."""
    for tool in (CHARON, SWANCTL):
        if not os.access(tool, os.X_OK):
            return f"{tool} is missing (scripts/setup.sh installs strongswan-charon, strongswan-swanctl)"
    return ""


class Charon:
    def __init__(self, netns, directory):
        self.netns = netns
        self.dir = directory
        self.vici = os.path.join(directory, "charon.vici")
        self.log = os.path.join(directory, "charon.log")
        self.process = None

    def env(self):
        return {"ETHERCTL_VICI_URI": "unix://" + self.vici, "ETHERCTL_SWANCTL_DIR": self.dir}

    def _write_config(self):
        os.makedirs(os.path.join(self.dir, "conf.d"), exist_ok=True)
        with open(os.path.join(self.dir, "strongswan.conf"), "w") as f:
            f.write(f"""charon {{
  load_modular = yes
  plugins {{
    include /etc/strongswan.d/charon/*.conf
    vici {{ socket = unix://{self.vici} }}
    stroke {{ load = no }}
    updown {{ load = no }}
    resolve {{ load = no }}
    bypass-lan {{ load = no }}
    counters {{ load = no }}
  }}
  filelog {{
    log {{
      path = {self.log}
      time_format = %T
      flush_line = yes
      default = 1
      ike = 2
    }}
  }}
  syslog {{ daemon {{ default = -1 }} }}
  install_routes = no
  retransmit_timeout = 2.0
  retransmit_tries = 3
}}
""")
        with open(os.path.join(self.dir, "swanctl.conf"), "w") as f:
            f.write("include conf.d/*.conf\n")

    def start(self, timeout=30):
        if not os.path.exists(f"/run/netns/{self.netns}"):
            raise AssertionError(f"namespace {self.netns} does not exist: not starting charon")
        self._write_config()
        if os.path.exists(self.vici):
            os.unlink(self.vici)
        conf = os.path.join(self.dir, "strongswan.conf")
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, "unshare", "-m", "sh", "-c",
             f"mount -t tmpfs etherctl-test /run && exec env STRONGSWAN_CONF={conf} {CHARON}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + timeout
        while not os.path.exists(self.vici):
            if self.process.poll() is not None:
                raise AssertionError(f"charon in {self.netns} exited ({self.process.returncode})")
            if time.time() > deadline:
                raise AssertionError(f"charon in {self.netns} has no VICI socket after {timeout} s")
            time.sleep(0.05)

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if not self.process or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def swanctl(self, *args, check=True):
        result = subprocess.run([SWANCTL, *args, "--uri", "unix://" + self.vici],
                                capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"swanctl {' '.join(args)}: {result.stderr}{result.stdout}")
        return result.stdout

    def load_all(self):
        """What the system's service does at start: load every file of the directory."""
        return self.swanctl("--load-all", "--noprompt", "--file",
                            os.path.join(self.dir, "swanctl.conf"))

    def sas(self):
        """{connection name: [child SA lines]} of `swanctl --list-sas` (the oracle)."""
        out, current, sas = self.swanctl("--list-sas", check=False), None, {}
        for line in out.splitlines():
            m = re.match(r"^(\S+): #\d+, (\w+)", line)
            if m:
                current = m.group(1)
                sas.setdefault(current, [])
            elif current and "INSTALLED" in line:
                sas[current].append(line.strip())
        return sas

    def conns(self):
        out = self.swanctl("--list-conns", check=False)
        return set(re.findall(r"^(\S+): IKEv", out, re.M))

    def log_text(self):
        try:
            with open(self.log) as f:
                return f.read()
        except OSError:
            return ""
