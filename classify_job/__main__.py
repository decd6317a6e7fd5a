from classify_job.cli import main

main()
