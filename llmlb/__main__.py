from llmlb.cli.main import main

main()
