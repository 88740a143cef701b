"""Train one run, or a sweep with -m: `python train.py loss=ipo beta=0.1`. See README.md."""

from dpo_exp.cli import main

if __name__ == "__main__":
    main()
