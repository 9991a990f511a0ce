from dicomnode.cli.app import main

main()
