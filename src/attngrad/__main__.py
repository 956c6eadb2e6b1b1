"""``python -m attngrad`` runs the command line."""

from .cli import main

main()
