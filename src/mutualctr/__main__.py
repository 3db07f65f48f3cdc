from mutualctr.cli import main

main()
