from runctl.cli import main

main()
