from local.capsule_emulator.cli import main

raise SystemExit(main())
