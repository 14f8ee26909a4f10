from agentbox_guest_init.main import main

raise SystemExit(main())
