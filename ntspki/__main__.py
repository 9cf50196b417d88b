from ntspki.cli import main

main()
