from checkout_cam.cli import main

raise SystemExit(main())
