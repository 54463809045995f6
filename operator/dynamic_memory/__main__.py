from dynamic_memory.cli import main

raise SystemExit(main())
