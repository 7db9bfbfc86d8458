"""``python -m genmodels`` runs the CLI (also under torchrun)."""

from genmodels.cli import main

raise SystemExit(main())
