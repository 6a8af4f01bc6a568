<#
.SYNOPSIS
    Run a crawlguard rebuild on this Windows rig, every process in ONE console,
    and start it again after a crash.
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
        (services get a console of their own per service, and a break from
        there reaches nothing);
      - if the worker is still alive after HELIX_BFM_GRACE_SECONDS, the
        sidecar kills it hard (its Job Object); file-level resume keeps that
        lossless, only the in-flight batch is redone.
    No pipe: output is logged by crawlguard itself (--log-file). PowerShell
    kills a native command that feeds a pipeline (Tee-Object) on Ctrl+C, which
    would end `up` without a grace period and orphan the worker and the sidecar.
    Without a pipe, Ctrl+C reaches `up`, and `up` stops every child itself.

    Restarts: a Scheduled Task's RestartCount retries only an action that failed
    to START (MS-TSCH); a crawlguard that ran and exited non-zero is not
    restarted by it. So this script does it: after any exit other than 0 (every
    shard complete), 130 (stopped on purpose: Ctrl+C) and 4 (the state dir
    vanished: a new start would make an empty one), it starts crawlguard
    again after -RestartDelaySeconds; after -MaxRestarts starts in a row that
    each ended within -StableSeconds it gives up and exits with the last
    status. A run that lasted -StableSeconds or more starts the count afresh.
    Every decision is appended to logs\task.log. The supervisor resumes every
    shard where it stopped.

    Containment: this script puts itself in a Job Object with kill-on-close, so
    everything it starts (crawlguard.exe, its Python, the separate mode's
    Start-Process children, which crawlguard's own jobs do not hold) ends when
    this script ends however it ends (Stop-ScheduledTask, a closed window).
    And it switches QuickEdit off on its console: a text selection there would
    stop every process that writes to the console (crawlguard does the same for
    itself; doing it here first means no child restores it while another runs).

    CRAWLGUARD_BUILD_CMD is split on whitespace: a path with spaces cannot be
    written there (use one without, or its 8.3 short name from `dir /x`).
    Mode 'up' (default) runs `crawlguard up`: exporter, sidecar, embedded
    alert evaluation and supervisor. With -EnvFile (a rig of a fleet: the
    crawlguard.env that `crawlguard fleet generate` wrote for it) it runs
    `crawlguard up --env-file FILE --alert-path external`: exporter and sidecar
    on the rig's address with TLS, alerts from the fleet's central host. Mode
    'separate' runs the exporter and the sidecar as children of this console
    plus the supervisor in the foreground, for a Prometheus and Alertmanager
    that run elsewhere.
.EXAMPLE
    powershell -NoProfile -ExecutionPolicy Bypass -File crawlguard.ps1
#>
[CmdletBinding()]
param(
    [string]$ConfigDir = (Join-Path $env:ProgramData 'crawlguard'),
    [ValidateSet('up', 'separate')]
    [string]$Mode = 'up',
    [string]$EnvFile = '',
    [ValidateRange(0, 1000)]
    [int]$MaxRestarts = 5,
    [ValidateRange(0, 86400)]
    [int]$RestartDelaySeconds = 60,
    [ValidateRange(1, 604800)]
    [int]$StableSeconds = 1800
)
$ErrorActionPreference = 'Stop'

# KEY=VALUE lines of crawlguard.env become this process's environment, which
# every child inherits. The rules are crawlguard's own (crawlguard.kernel.envfile):
# blank lines and '#' lines are skipped, anything else must be NAME=VALUE.
$envFile = Join-Path $ConfigDir 'crawlguard.env'
$number = 0
foreach ($line in Get-Content -Path $envFile) {
    $number++
    $line = $line.Trim()
    if ($line -eq '' -or $line.StartsWith('#')) { continue }
    $at = $line.IndexOf('=')
    $key = if ($at -gt 0) { $line.Substring(0, $at).Trim() } else { '' }
    if ($key -notmatch '^[A-Za-z_][A-Za-z0-9_]*$') {
        throw "${envFile} line ${number}: expected KEY=VALUE (a variable name, '=', the value) or a '#' comment"
    }
    [Environment]::SetEnvironmentVariable($key, $line.Substring($at + 1).Trim(), 'Process')
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
$command = if ($Mode -eq 'up') { 'up' } else { 'run' }
$logDir = Join-Path $ConfigDir 'logs'
New-Item -ItemType Directory -Force -Path $logDir | Out-Null
$taskLog = Join-Path $logDir 'task.log'
function Write-TaskLog([string]$text) {
    $line = '{0:yyyy-MM-dd HH:mm:ss} {1}' -f (Get-Date), $text
    Write-Host "crawlguard.ps1: $text"
    Add-Content -Path $taskLog -Value $line -Encoding utf8
}
$fleetArgs = @()
if ($EnvFile) {
    if ($Mode -ne 'up') { throw "-EnvFile runs 'crawlguard up': use it with -Mode up" }
    # The env file's values (the rig's address, TLS files, token) win over crawlguard.env.
    $fleetArgs = @('--env-file', $EnvFile, '--alert-path', 'external')
}

# Compiled once per PowerShell session (a second Add-Type of one type name fails).
if (-not ('CrawlguardHost' -as [type])) { Add-Type -TypeDefinition @'
using System;
using System.Runtime.InteropServices;
public static class CrawlguardHost {
    [DllImport("kernel32.dll", SetLastError = true, CharSet = CharSet.Unicode)]
    static extern IntPtr CreateFileW(string name, uint access, uint share, IntPtr sa,
                                     uint disposition, uint flags, IntPtr template);
    [DllImport("kernel32.dll", SetLastError = true)]
    static extern bool GetConsoleMode(IntPtr handle, out uint mode);
    [DllImport("kernel32.dll", SetLastError = true)]
    static extern bool SetConsoleMode(IntPtr handle, uint mode);
    [DllImport("kernel32.dll", SetLastError = true)]
    static extern bool CloseHandle(IntPtr handle);
    [DllImport("kernel32.dll", SetLastError = true, CharSet = CharSet.Unicode)]
    static extern IntPtr CreateJobObjectW(IntPtr sa, string name);
    [DllImport("kernel32.dll", SetLastError = true)]
    static extern bool SetInformationJobObject(IntPtr job, int infoClass,
                                               ref ExtendedLimits info, uint size);
    [DllImport("kernel32.dll", SetLastError = true)]
    static extern bool AssignProcessToJobObject(IntPtr job, IntPtr process);
    [DllImport("kernel32.dll")]
    static extern IntPtr GetCurrentProcess();

    [StructLayout(LayoutKind.Sequential)]
    struct BasicLimits {
        public long PerProcessUserTimeLimit; public long PerJobUserTimeLimit;
        public uint LimitFlags; public UIntPtr MinimumWorkingSetSize;
        public UIntPtr MaximumWorkingSetSize; public uint ActiveProcessLimit;
        public UIntPtr Affinity; public uint PriorityClass; public uint SchedulingClass;
    }
    [StructLayout(LayoutKind.Sequential)]
    struct IoCounters { public ulong R, W, O, RT, WT, OT; }
    [StructLayout(LayoutKind.Sequential)]
    struct ExtendedLimits {
        public BasicLimits Basic; public IoCounters Io;
        public UIntPtr ProcessMemoryLimit; public UIntPtr JobMemoryLimit;
        public UIntPtr PeakProcessMemoryUsed; public UIntPtr PeakJobMemoryUsed;
    }

    // Held until this process ends: then the system closes it and kills the job.
    static IntPtr job = IntPtr.Zero;

    public static string QuickEditOff() {
        // CONIN$: the console's input buffer even when stdin is redirected.
        IntPtr input = CreateFileW("CONIN$", 0xC0000000, 3, IntPtr.Zero, 3, 0, IntPtr.Zero);
        if (input == new IntPtr(-1)) return "no console";
        try {
            uint mode;
            if (!GetConsoleMode(input, out mode)) return "no console";
            if ((mode & 0x40) == 0) return "QuickEdit already off";
            // ENABLE_EXTENDED_FLAGS (0x80) must be set for the QuickEdit bit to count.
            if (!SetConsoleMode(input, (mode | 0x80u) & ~0x40u))
                return "SetConsoleMode failed (Windows error " + Marshal.GetLastWin32Error() + ")";
            return "QuickEdit off";
        } finally { CloseHandle(input); }
    }

    public static string KillOnCloseJob() {
        job = CreateJobObjectW(IntPtr.Zero, null);
        if (job == IntPtr.Zero)
            return "CreateJobObject failed (Windows error " + Marshal.GetLastWin32Error() + ")";
        ExtendedLimits info = new ExtendedLimits();
        info.Basic.LimitFlags = 0x2000;  // JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
        if (!SetInformationJobObject(job, 9, ref info, (uint)Marshal.SizeOf(info)))
            return "SetInformationJobObject failed (Windows error " + Marshal.GetLastWin32Error() + ")";
        if (!AssignProcessToJobObject(job, GetCurrentProcess()))
            return "AssignProcessToJobObject failed (Windows error " + Marshal.GetLastWin32Error() + ")";
        return "ok";
    }
}
'@ }
$console = [CrawlguardHost]::QuickEditOff()
$contained = [CrawlguardHost]::KillOnCloseJob()
if ($contained -ne 'ok') {
    Write-TaskLog "warning: no kill-on-close job for this script ($contained): a hard stop of the task may leave separate mode's children running"
}
Write-Verbose "console: $console"

# Native programs log to stderr; under 'Stop', Windows PowerShell 5.1 would
# turn the first stderr line into a terminating error.
$ErrorActionPreference = 'Continue'
$children = @{}
$failures = 0
$rc = 0
try {
    while ($true) {
        if ($Mode -eq 'separate') {
            # -NoNewWindow: same console as the supervisor and its workers. Started again
            # when they ended (they are in this script's job, not in crawlguard's).
            foreach ($name in 'exporter', 'sidecar') {
                $p = $children[$name]
                if (-not $p -or $p.HasExited) {
                    $children[$name] = Start-Process -FilePath $crawlguard -ArgumentList $name -NoNewWindow -PassThru
                }
            }
        }
        $log = Join-Path $logDir ("crawlguard-{0:yyyyMMdd-HHmmss}.log" -f (Get-Date))
        # '--' goes in as an array element: PowerShell passes splatted elements to a
        # native command verbatim.
        $argv = @($command, '--log-file', $log) + $fleetArgs + $shardArgs + @('--') + $build
        $started = Get-Date
        # No pipe here (see .DESCRIPTION): the console shows the live view, the file the lines.
        & $crawlguard @argv
        $rc = $LASTEXITCODE
        $ran = [int]((Get-Date) - $started).TotalSeconds
        if ($rc -eq 0) { Write-TaskLog "crawlguard $command finished: every shard complete"; break }
        if ($rc -eq 130) { Write-TaskLog "crawlguard $command was stopped (exit 130): not restarted"; break }
        # 4: the state dir vanished mid-run; a new start would make an empty one and forget every ladder.
        if ($rc -eq 4) { Write-TaskLog "crawlguard $command stopped: its state dir vanished (exit 4): not restarted"; break }
        $failures = if ($ran -ge $StableSeconds) { 1 } else { $failures + 1 }
        if ($failures -gt $MaxRestarts) {
            Write-TaskLog ("crawlguard $command exited $rc after ${ran}s; giving up after " +
                "$MaxRestarts restarts in a row that each ended within ${StableSeconds}s (see $log)")
            break
        }
        Write-TaskLog ("crawlguard $command exited $rc after ${ran}s; restart $failures of " +
            "$MaxRestarts in ${RestartDelaySeconds}s (see $log)")
        Start-Sleep -Seconds $RestartDelaySeconds
    }
}
finally {
    foreach ($p in $children.Values) {
        if ($p -and -not $p.HasExited) { Stop-Process -Id $p.Id -Force }
    }
}
exit $rc
