// device_launch_parameters.h — the CUDA emulator's stand-in. Everything a kernel may use
// (built-ins, vector types, dim3, intrinsics) is already defined by the
// force-included shim.h; host-side runtime API calls are not available.
#pragma once
