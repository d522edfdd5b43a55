from dft_mm.cli import main

raise SystemExit(main())
