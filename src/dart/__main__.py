from dart.cli import main

raise SystemExit(main())
