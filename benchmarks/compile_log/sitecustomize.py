"""Log every Triton (and Gluon) kernel compilation of every Python process, engine processes
included, with its duration: which kernels compile during a timed run, and for how long.

    COMPILE_LOG=/tmp/compiles.log PYTHONPATH=benchmarks/compile_log:$PYTHONPATH \\
        python benchmarks/generate.py --workload long

Python imports ``sitecustomize`` at start-up from the path, so vLLM's engine-core process
loads it too. Each line: start time (epoch s), duration, pid, kernel, its integer constexprs.
A compilation found in Triton's disk cache shows as well, taking a fraction of a second.
"""

import os
import time

if os.environ.get("COMPILE_LOG"):
    from triton.runtime import jit

    _compile = jit.JITFunction._do_compile

    def _logged_compile(self, key, signature, device, constexprs, options, attrs, warmup):
        start = time.time()
        kernel = _compile(self, key, signature, device, constexprs, options, attrs, warmup)
        constants = {k: v for k, v in constexprs.items() if isinstance(v, (int, float, bool))}
        with open(os.environ["COMPILE_LOG"], "a") as log:
            log.write(f"{start:.3f} {time.time() - start:.3f}s {os.getpid()} "
                      f"{self.fn.__module__}.{self.fn.__name__} {str(constants)[:300]}\n")
        return kernel

    jit.JITFunction._do_compile = _logged_compile
