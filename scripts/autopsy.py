"""Post-training autopsy of a checkpoint; identical to the ``cerebro-autopsy`` console script."""

from cerebro.cli import main

if __name__ == "__main__":
    main()
