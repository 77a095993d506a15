from tttlab.cli import main

raise SystemExit(main())
