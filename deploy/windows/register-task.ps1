<#
.SYNOPSIS
    Register crawlguard.ps1 as a Scheduled Task: at logon (default) or at startup.
.DESCRIPTION
    A Scheduled Task, not a service (NSSM, sc.exe): the whole process tree runs
    in one console, which CTRL_BREAK_EVENT needs (services get a console each).

    -Trigger Logon (default): "Run only when user is logged on" (Interactive):
    the rig user's session and a visible console, the GPU in the same WDDM
    session the incidents were seen in. After a reboot it starts only once the
    rig user logs on: an unattended reboot (Windows Update) resumes nothing
    unless the rig logs that user on automatically (Sysinternals Autologon,
    which keeps the password as an LSA secret), docs/deploy.md#windows.

    -Trigger Startup: starts at boot with nobody logged on ("Run whether user is
    logged on or not", S4U: no password stored, no network credentials), in
    session 0 with a console of its own and no window. CTRL_BREAK_EVENT still
    works (every process of the tree shares that console). Whether CUDA and the
    WDDM spill behave in session 0 as in the interactive session depends on the
    driver: check it once on the rig (docs/windows-acceptance.md, step 13)
    before relying on it.

    Restarts: RestartCount/RestartInterval retry only an action that failed to
    start (MS-TSCH 2.5.4.2), so they are kept for that; crawlguard.ps1 restarts
    crawlguard itself after a non-zero exit (its -MaxRestarts). A finished
    rebuild exits 0 and stays finished.

    Priority: a task's default priority is 7, BELOW_NORMAL_PRIORITY_CLASS, which
    every child inherits (CreateProcess), with a lower I/O and memory priority:
    workers would run slower than by hand and their baselines would differ.
    -Priority 4 is NORMAL_PRIORITY_CLASS (ITaskSettings::Priority), as a run
    from a console. crawlguard also starts its workers at NORMAL whatever it
    runs at, and `crawlguard doctor` warns when it runs below that.
#>
[CmdletBinding()]
param(
    [string]$ConfigDir = (Join-Path $env:ProgramData 'crawlguard'),
    [string]$TaskName = 'crawlguard',
    [ValidateSet('up', 'separate')]
    [string]$Mode = 'up',
    [ValidateSet('Logon', 'Startup')]
    [string]$Trigger = 'Logon',
    [string]$RigUser = "$env:USERDOMAIN\$env:USERNAME"
)
$ErrorActionPreference = 'Stop'

$script = Join-Path $PSScriptRoot 'crawlguard.ps1'
$arguments = "-NoProfile -ExecutionPolicy Bypass -File `"$script`" -ConfigDir `"$ConfigDir`" -Mode $Mode"
$action = New-ScheduledTaskAction -Execute 'powershell.exe' -Argument $arguments
if ($Trigger -eq 'Startup') {
    $when = New-ScheduledTaskTrigger -AtStartup
    # S4U: runs with nobody logged on, without storing a password.
    $principal = New-ScheduledTaskPrincipal -UserId $RigUser -LogonType S4U -RunLevel Limited
}
else {
    $when = New-ScheduledTaskTrigger -AtLogOn -User $RigUser
    # Interactive = "Run only when user is logged on": the user's session and console.
    $principal = New-ScheduledTaskPrincipal -UserId $RigUser -LogonType Interactive -RunLevel Limited
}
$settings = New-ScheduledTaskSettingsSet `
    -Priority 4 `
    -ExecutionTimeLimit ([TimeSpan]::Zero) `
    -RestartCount 5 -RestartInterval (New-TimeSpan -Minutes 2) `
    -MultipleInstances IgnoreNew `
    -AllowStartIfOnBatteries -DontStopIfGoingOnBatteries -StartWhenAvailable
Register-ScheduledTask -TaskName $TaskName -Action $action -Trigger $when `
    -Principal $principal -Settings $settings -Force `
    -Description 'crawlguard: supervised embedding rebuild with VRAM-spill crawl remediation' | Out-Null
$registered = Get-ScheduledTask -TaskName $TaskName
if ($registered.Settings.Priority -ne 4) {
    throw "task '$TaskName' registered with priority $($registered.Settings.Priority), not 4"
}
$at = if ($Trigger -eq 'Startup') { 'at startup, nobody logged on' } else { "at logon of $RigUser" }
Write-Host "registered task '$TaskName' (starts $at, priority 4 = NORMAL)."
Write-Host "start it now:  Start-ScheduledTask -TaskName $TaskName"
Write-Host "stop it:       Stop-ScheduledTask -TaskName $TaskName  (hard stop: the supervisor resumes later)"
