"""``python -m phi3`` runs the CLI."""

from phi3.cli import main

if __name__ == "__main__":
    main()
