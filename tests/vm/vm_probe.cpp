// Tiny build-tree binary for the vm.<kernel>.features self-test: proves that an executable built
// by this tree (dynamically linked against the host's libstdc++ over the 9p root) runs in the
// guest, and that it sees the guest's kernel. Prints "etherctl_vm_probe <release>".
#include <sys/utsname.h>

#include <cstdlib>
#include <iostream>
#include <string>

int main() {
  utsname names{};
  if (uname(&names) != 0) return 2;
  const char* in_vm = std::getenv("ETHERCTL_IN_VM");
  if (in_vm == nullptr || std::string(in_vm) != "1") {
    std::cerr << "etherctl_vm_probe: ETHERCTL_IN_VM=1 is not set (not inside vm-run?)\n";
    return 1;
  }
  std::cout << "etherctl_vm_probe " << names.release << "\n";
  return 0;
}
