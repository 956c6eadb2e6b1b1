"""``python -m attngrad.evaluation perturbation ...``: the ``attngrad evaluate`` commands, e.g. under torchrun."""

from ..cli import main

if __name__ == "__main__":
    main(args=["evaluate", *__import__("sys").argv[1:]], prog_name="python -m attngrad.evaluation")
