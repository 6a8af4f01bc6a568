<#
.SYNOPSIS
    Run a crawlguard rebuild on this Windows rig, every process in ONE console.
.DESCRIPTION
    Why one console: the restart rung stops the worker gracefully with
    CTRL_BREAK_EVENT (GenerateConsoleCtrlEvent), which Windows delivers only
    to processes attached to the caller's console, and only to the process
    group named. So:
      - `crawlguard run` starts each worker in a process group of its own
        (CREATE_NEW_PROCESS_GROUP), so the break reaches the worker and its
        children, never the supervisor, the sidecar or this script;
      - the sidecar must be attached to the same console as the worker: run it
        from this script (or let `crawlguard up` run it), never as a service
        (services run in session 0 with a console of their own, and a break
        from there reaches nothing);
      - if the worker is still alive after HELIX_BFM_GRACE_SECONDS, the
        sidecar kills it hard (TerminateProcess); file-level resume keeps
        that lossless, only the in-flight batch is redone.
    No pipe: output is logged by crawlguard itself (--log-file). PowerShell
    kills a native command that feeds a pipeline (Tee-Object) on Ctrl+C, which
    would end `up` without a grace period and orphan the worker and the sidecar.
    Without a pipe, Ctrl+C reaches `up`, and `up` stops every child itself.
    Every child runs in a Job Object with kill-on-close, so closing this window
    ends them too (without a grace period: Windows allows none).
    CRAWLGUARD_BUILD_CMD is split on whitespace: a path with spaces cannot be
    written there (use one without, or its 8.3 short name from `dir /x`).
    Mode 'up' (default) runs `crawlguard up`: exporter, sidecar, embedded
    alert evaluation and supervisor. With -EnvFile (a rig of a fleet: the
    crawlguard.env that `crawlguard fleet generate` wrote for it) it runs
    `crawlguard up --env-file FILE --alert-path external`: exporter and sidecar
    on the rig's address with TLS, alerts from the fleet's central host. Mode 'separate' runs the exporter and the
    sidecar as children of this console plus the supervisor in the
    foreground, for a Prometheus and Alertmanager that run elsewhere.
.EXAMPLE
    powershell -NoProfile -ExecutionPolicy Bypass -File crawlguard.ps1
#>
[CmdletBinding()]
param(
    [string]$ConfigDir = (Join-Path $env:ProgramData 'crawlguard'),
    [ValidateSet('up', 'separate')]
    [string]$Mode = 'up',
    [string]$EnvFile = ''
)
$ErrorActionPreference = 'Stop'

# KEY=VALUE lines of crawlguard.env become this process's environment, which
# every child inherits.
$envFile = Join-Path $ConfigDir 'crawlguard.env'
foreach ($line in Get-Content -Path $envFile) {
    $line = $line.Trim()
    if ($line -eq '' -or $line.StartsWith('#')) { continue }
    $key, $value = $line -split '=', 2
    [Environment]::SetEnvironmentVariable($key.Trim(), $value.Trim(), 'Process')
}
if (-not $env:HELIX_BFM_STATE_DIR) { $env:HELIX_BFM_STATE_DIR = Join-Path $ConfigDir 'state' }
$env:HELIX_BFM_SIDECAR_TOKEN_FILE = Join-Path $ConfigDir 'sidecar.token'
$crawlguard = if ($env:CRAWLGUARD_EXE) { $env:CRAWLGUARD_EXE } else { 'crawlguard.exe' }

$shards = @($env:CRAWLGUARD_SHARDS -split '\s+' | Where-Object { $_ })
$build = @($env:CRAWLGUARD_BUILD_CMD -split '\s+' | Where-Object { $_ })
if ($shards.Count -eq 0 -or $build.Count -eq 0) {
    throw "set CRAWLGUARD_SHARDS and CRAWLGUARD_BUILD_CMD in $envFile"
}
$shardArgs = @()
foreach ($s in $shards) { $shardArgs += @('--shard', $s) }
# '--' goes in as an array element: PowerShell passes splatted elements to a
# native command verbatim.
$command = if ($Mode -eq 'up') { 'up' } else { 'run' }
$log = Join-Path $ConfigDir ("logs\crawlguard-{0:yyyyMMdd-HHmmss}.log" -f (Get-Date))
New-Item -ItemType Directory -Force -Path (Split-Path -Parent $log) | Out-Null
$fleetArgs = @()
if ($EnvFile) {
    if ($Mode -ne 'up') { throw "-EnvFile runs 'crawlguard up': use it with -Mode up" }
    # The env file's values (the rig's address, TLS files, token) win over crawlguard.env.
    $fleetArgs = @('--env-file', $EnvFile, '--alert-path', 'external')
}
$argv = @($command, '--log-file', $log) + $fleetArgs + $shardArgs + @('--') + $build
# Native programs log to stderr; under 'Stop', Windows PowerShell 5.1 would
# turn the first stderr line into a terminating error.
$ErrorActionPreference = 'Continue'
$children = @()
if ($Mode -eq 'separate') {
    # -NoNewWindow: same console as the supervisor and its workers.
    $children += Start-Process -FilePath $crawlguard -ArgumentList 'exporter' -NoNewWindow -PassThru
    $children += Start-Process -FilePath $crawlguard -ArgumentList 'sidecar' -NoNewWindow -PassThru
}
try {
    # No pipe here (see .DESCRIPTION): the console shows the live view, the file the lines.
    & $crawlguard @argv
    $rc = $LASTEXITCODE
}
finally {
    foreach ($p in $children) {
        if (-not $p.HasExited) { Stop-Process -Id $p.Id -Force }
    }
}
exit $rc
