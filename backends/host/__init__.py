"""Code shared by the families that build for or run on the host CPU; not a family itself.

- probe.py: what the host CPU is (LLVM's name and features, usable cores) and the TVM target
  for a profile whose `mcpu` is `host`;
- vm_runner.py: VmRunner, which runs an artifact's lib.so through the Relax VM on a TVM
  device (the cpu family, the npu simulator, GPU families where their device is present);
- relax_passes.py: graph passes on Relax (constant folding in numpy, Sum as adds, conv
  affine folding...);
- schedule.py: default schedules of host kernels and the cpu_generic pipeline around them.

Why here and not in backends/cpu: other families used these as the cpu backend's private
helpers, so a change to the cpu family could silently change the npu simulator.
"""
