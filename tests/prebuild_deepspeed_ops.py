"""DeepSpeed JIT-builds its CPU ops (the shared-memory collective, CPU Adam) the first time a process uses
them: about a minute of compiler each on a fresh machine, on the critical path of whichever test comes first.
The test session runs this in the background at low priority (tests/conftest.py) so that the builds use idle
cycles instead: the shared-memory op into torch's default extensions folder (every launched test), both into
the virtual environment's own folder (tests/trainer/test_partitioned_loading.py). Concurrent builds of one op
wait for each other (torch's build lock), so a test that needs an op first simply waits for this build."""

import os
import subprocess
import sys

BUILD = """
from deepspeed.ops.op_builder.cpu import {builders}
for builder in ({builders},):
    builder().load(verbose=False)
"""


def main() -> None:
    env = {**os.environ, "DS_ACCELERATOR": "cpu"}
    venv_dir = os.path.join(sys.prefix, "torch_extensions")
    builds = ((None, "ShareMemCommBuilder"), (venv_dir, "ShareMemCommBuilder, CPUAdamBuilder"))
    for extensions, builders in builds:
        run_env = {**env, "TORCH_EXTENSIONS_DIR": extensions} if extensions else env
        code = BUILD.format(builders=builders)
        subprocess.run([sys.executable, "-c", code], env=run_env, capture_output=True, check=False)


if __name__ == "__main__":
    main()
