from agentbox_cli.main import main

raise SystemExit(main())
