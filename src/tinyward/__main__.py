from tinyward.cli.main import main

main()
