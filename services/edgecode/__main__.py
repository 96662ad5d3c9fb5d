from edgecode.cli import main

raise SystemExit(main())
