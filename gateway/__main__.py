"""`python -m gateway` runs the same CLI as the `status-gateway` script."""

from gateway.cli import main

main()
