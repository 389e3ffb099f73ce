"""A stand-in for a vendor's torch device plug-in (torch_npu, torch_musa...): importing it is
what makes the vendor's device usable from torch. Real plug-ins add a device type ('npu') and
its kernels; this one maps to torch's own 'cpu' device, so the plug-in path of
compiler/dispatch/torch_device.py runs for real on a machine without an accelerator."""

IMPORTS = []          # appended at import: the test checks the library imported the plug-in
IMPORTS.append(__name__)
DEVICE = "cpu"
