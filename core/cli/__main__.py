from praefect.core.cli import main

main()
