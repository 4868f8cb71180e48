"""Every exit status of `fleet`, in one place: main and the commands return these names, and the docs'
reference is generated from EXIT_CODES."""

OK = 0
FAILED = 1
BAD_INPUT = 2
INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a process Ctrl-C ended
TERMINATED = 143   # 128 + SIGTERM

EXIT_CODES = {
    OK: "success",
    FAILED: "the run failed (it aggregated nothing, or no devices answered), or a deployment command did "
            "(a SuperLink or SuperNode did not start, a submitted run did not complete)",
    BAD_INPUT: "bad input: one line on stderr names the culprit; nothing ran and nothing was written",
    INTERRUPTED: "interrupted (Ctrl-C); what finished is on disk, and `fleet run --resume` continues",
    TERMINATED: "terminated (SIGTERM); as for 130",
}
