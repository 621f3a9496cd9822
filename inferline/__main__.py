from inferline.cli.main import main

main()
