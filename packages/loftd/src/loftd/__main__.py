from loftd.main import main

raise SystemExit(main())
