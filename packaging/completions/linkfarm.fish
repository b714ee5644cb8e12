# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_linkfarm_global_optspecs
    string join \n c/config= h/help V/version
end

function __fish_linkfarm_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_linkfarm_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_linkfarm_using_subcommand
    set -l cmd (__fish_linkfarm_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c linkfarm -n "__fish_linkfarm_needs_command" -s c -l config -d 'The desired-state file' -r -F
complete -c linkfarm -n "__fish_linkfarm_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c linkfarm -n "__fish_linkfarm_needs_command" -s V -l version -d 'Print version'
complete -c linkfarm -n "__fish_linkfarm_needs_command" -f -a "run" -d 'Run the daemon: reconcile, watch, repair (exit 0 on stop, 78 on an invalid config)'
complete -c linkfarm -n "__fish_linkfarm_needs_command" -f -a "check" -d 'Show what `apply` would do; change nothing (exit 0 converged, 1 drift, 2 error)'
complete -c linkfarm -n "__fish_linkfarm_needs_command" -f -a "apply" -d 'Run one reconcile pass and print what it did (exit 0 ok, 1 some actions failed)'
complete -c linkfarm -n "__fish_linkfarm_needs_command" -f -a "validate" -d 'Check the config file only, like `nginx -t` (exit 0 valid, 78 invalid)'
complete -c linkfarm -n "__fish_linkfarm_needs_command" -f -a "status" -d 'Read the running daemon\'s state file (exit 0 converged, 1 not, 2 not running)'
complete -c linkfarm -n "__fish_linkfarm_needs_command" -f -a "doctor" -d 'Diagnose the setup: config, farms, permissions, inotify, disk, Samba (exit 0, or 1 on a failure)'
complete -c linkfarm -n "__fish_linkfarm_needs_command" -f -a "verify" -d 'Check model files in place: truncated, corrupt, unsafe pickles, wrong folder (exit 0, or 1 on a FAIL)'
complete -c linkfarm -n "__fish_linkfarm_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c linkfarm -n "__fish_linkfarm_using_subcommand run" -l log-format -d 'Log format on stderr when not under journald' -r -f -a "text\t'Human-readable lines (colour only on a terminal)'
json\t'One JSON object per line'"
complete -c linkfarm -n "__fish_linkfarm_using_subcommand run" -s c -l config -d 'The desired-state file' -r -F
complete -c linkfarm -n "__fish_linkfarm_using_subcommand run" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c linkfarm -n "__fish_linkfarm_using_subcommand run" -s V -l version -d 'Print version'
complete -c linkfarm -n "__fish_linkfarm_using_subcommand check" -s c -l config -d 'The desired-state file' -r -F
complete -c linkfarm -n "__fish_linkfarm_using_subcommand check" -l json -d 'Print JSON (stable; see the README) instead of text'
complete -c linkfarm -n "__fish_linkfarm_using_subcommand check" -s h -l help -d 'Print help'
complete -c linkfarm -n "__fish_linkfarm_using_subcommand check" -s V -l version -d 'Print version'
complete -c linkfarm -n "__fish_linkfarm_using_subcommand apply" -s c -l config -d 'The desired-state file' -r -F
complete -c linkfarm -n "__fish_linkfarm_using_subcommand apply" -l dry-run -d 'Plan only, like `check`, but exit as `apply` would'
complete -c linkfarm -n "__fish_linkfarm_using_subcommand apply" -l json -d 'Print JSON (stable; see the README) instead of text'
complete -c linkfarm -n "__fish_linkfarm_using_subcommand apply" -s h -l help -d 'Print help'
complete -c linkfarm -n "__fish_linkfarm_using_subcommand apply" -s V -l version -d 'Print version'
complete -c linkfarm -n "__fish_linkfarm_using_subcommand validate" -s c -l config -d 'The desired-state file' -r -F
complete -c linkfarm -n "__fish_linkfarm_using_subcommand validate" -s h -l help -d 'Print help'
complete -c linkfarm -n "__fish_linkfarm_using_subcommand validate" -s V -l version -d 'Print version'
complete -c linkfarm -n "__fish_linkfarm_using_subcommand status" -s c -l config -d 'The desired-state file' -r -F
complete -c linkfarm -n "__fish_linkfarm_using_subcommand status" -l json -d 'Print JSON (stable; see the README) instead of text'
complete -c linkfarm -n "__fish_linkfarm_using_subcommand status" -s h -l help -d 'Print help'
complete -c linkfarm -n "__fish_linkfarm_using_subcommand status" -s V -l version -d 'Print version'
complete -c linkfarm -n "__fish_linkfarm_using_subcommand doctor" -l smb-conf -d 'The Samba config to check the shares of (read through `testparm` when installed)' -r -F
complete -c linkfarm -n "__fish_linkfarm_using_subcommand doctor" -s c -l config -d 'The desired-state file' -r -F
complete -c linkfarm -n "__fish_linkfarm_using_subcommand doctor" -l json -d 'Print JSON instead of text'
complete -c linkfarm -n "__fish_linkfarm_using_subcommand doctor" -s h -l help -d 'Print help'
complete -c linkfarm -n "__fish_linkfarm_using_subcommand doctor" -s V -l version -d 'Print version'
complete -c linkfarm -n "__fish_linkfarm_using_subcommand verify" -s c -l config -d 'The desired-state file' -r -F
complete -c linkfarm -n "__fish_linkfarm_using_subcommand verify" -l hash -d 'Print the SHA-256 of every checked file, and its 10-hex short form'
complete -c linkfarm -n "__fish_linkfarm_using_subcommand verify" -l json -d 'Print JSON instead of text'
complete -c linkfarm -n "__fish_linkfarm_using_subcommand verify" -s h -l help -d 'Print help'
complete -c linkfarm -n "__fish_linkfarm_using_subcommand verify" -s V -l version -d 'Print version'
complete -c linkfarm -n "__fish_linkfarm_using_subcommand help; and not __fish_seen_subcommand_from run check apply validate status doctor verify help" -f -a "run" -d 'Run the daemon: reconcile, watch, repair (exit 0 on stop, 78 on an invalid config)'
complete -c linkfarm -n "__fish_linkfarm_using_subcommand help; and not __fish_seen_subcommand_from run check apply validate status doctor verify help" -f -a "check" -d 'Show what `apply` would do; change nothing (exit 0 converged, 1 drift, 2 error)'
complete -c linkfarm -n "__fish_linkfarm_using_subcommand help; and not __fish_seen_subcommand_from run check apply validate status doctor verify help" -f -a "apply" -d 'Run one reconcile pass and print what it did (exit 0 ok, 1 some actions failed)'
complete -c linkfarm -n "__fish_linkfarm_using_subcommand help; and not __fish_seen_subcommand_from run check apply validate status doctor verify help" -f -a "validate" -d 'Check the config file only, like `nginx -t` (exit 0 valid, 78 invalid)'
complete -c linkfarm -n "__fish_linkfarm_using_subcommand help; and not __fish_seen_subcommand_from run check apply validate status doctor verify help" -f -a "status" -d 'Read the running daemon\'s state file (exit 0 converged, 1 not, 2 not running)'
complete -c linkfarm -n "__fish_linkfarm_using_subcommand help; and not __fish_seen_subcommand_from run check apply validate status doctor verify help" -f -a "doctor" -d 'Diagnose the setup: config, farms, permissions, inotify, disk, Samba (exit 0, or 1 on a failure)'
complete -c linkfarm -n "__fish_linkfarm_using_subcommand help; and not __fish_seen_subcommand_from run check apply validate status doctor verify help" -f -a "verify" -d 'Check model files in place: truncated, corrupt, unsafe pickles, wrong folder (exit 0, or 1 on a FAIL)'
complete -c linkfarm -n "__fish_linkfarm_using_subcommand help; and not __fish_seen_subcommand_from run check apply validate status doctor verify help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
