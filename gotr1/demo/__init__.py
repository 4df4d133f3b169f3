"""The embedded demo (``gotr1 demo``): a synthetic GoT world, the VQ tokenizer trained for it, and the run
that shows SFT then GRPO learning on it, offline on a CPU (see ``gotr1.demo.run``)."""
