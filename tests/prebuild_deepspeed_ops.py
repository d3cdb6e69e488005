"""DeepSpeed JIT-builds its CPU ops (the shared-memory collective, CPU Adam) the first time a process uses
them: over a minute of compiler on a fresh machine, on the critical path of whichever test comes first. A
test session with multi-process tests runs this in the background at the lowest priority (tests/conftest.py),
so that the builds use idle cycles instead, into the session's extensions folder. Concurrent builds of one op
wait for each other (torch's build lock): a test that needs an op before this build is done waits for it."""

from deepspeed.ops.op_builder.cpu import CPUAdamBuilder, ShareMemCommBuilder

if __name__ == "__main__":
    for builder in (ShareMemCommBuilder, CPUAdamBuilder):
        builder().load(verbose=False)
