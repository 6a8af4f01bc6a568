<#
.SYNOPSIS
    Register crawlguard.ps1 as a Scheduled Task that starts at logon.
.DESCRIPTION
    A Scheduled Task, not a service (NSSM, sc.exe): the task runs in the rig
    user's interactive session ("Run only when user is logged on"), with one
    console for the whole process tree, which CTRL_BREAK_EVENT needs, and with
    the GPU in the same WDDM session the incidents were seen in. A service
    runs in session 0, gets a console of its own per service, and cannot
    deliver a break to a worker in another console.
    The task restarts the script if it fails; the supervisor resumes every
    shard where it stopped. A finished rebuild exits 0 and stays finished.
#>
[CmdletBinding()]
param(
    [string]$ConfigDir = (Join-Path $env:ProgramData 'crawlguard'),
    [string]$TaskName = 'crawlguard',
    [ValidateSet('up', 'separate')]
    [string]$Mode = 'up',
    [string]$RigUser = "$env:USERDOMAIN\$env:USERNAME"
)
$ErrorActionPreference = 'Stop'

$script = Join-Path $PSScriptRoot 'crawlguard.ps1'
$arguments = "-NoProfile -ExecutionPolicy Bypass -File `"$script`" -ConfigDir `"$ConfigDir`" -Mode $Mode"
$action = New-ScheduledTaskAction -Execute 'powershell.exe' -Argument $arguments
$trigger = New-ScheduledTaskTrigger -AtLogOn -User $RigUser
# Interactive = "Run only when user is logged on": the user's session and console.
$principal = New-ScheduledTaskPrincipal -UserId $RigUser -LogonType Interactive -RunLevel Limited
$settings = New-ScheduledTaskSettingsSet `
    -ExecutionTimeLimit ([TimeSpan]::Zero) `
    -RestartCount 5 -RestartInterval (New-TimeSpan -Minutes 2) `
    -MultipleInstances IgnoreNew `
    -AllowStartIfOnBatteries -DontStopIfGoingOnBatteries -StartWhenAvailable
Register-ScheduledTask -TaskName $TaskName -Action $action -Trigger $trigger `
    -Principal $principal -Settings $settings -Force `
    -Description 'crawlguard: supervised embedding rebuild with VRAM-spill crawl remediation' | Out-Null
Write-Host "registered task '$TaskName' (starts at logon of $RigUser)."
Write-Host "start it now:  Start-ScheduledTask -TaskName $TaskName"
Write-Host "stop it:       Stop-ScheduledTask -TaskName $TaskName  (hard stop: the supervisor resumes later)"
