from dicomnode.cli.app import main

# Guarded: the receiver processes (multiprocessing "spawn") import this module again.
if __name__ == "__main__":
    main()
