<#
.SYNOPSIS
    One-time setup of a Windows rig for crawlguard: folders, token, config.
.DESCRIPTION
    Creates %ProgramData%\crawlguard (config, state dir, logs), a random bearer
    token for the sidecar in sidecar.token with an ACL that is the Windows
    equivalent of chmod 600 (the rig user may read it; SYSTEM and
    Administrators keep full control; nothing inherited), and crawlguard.env
    from the example next to this script when there is none yet.
    Run it once, as the user who will run the rebuild, in an elevated shell.
#>
[CmdletBinding()]
param(
    [string]$ConfigDir = (Join-Path $env:ProgramData 'crawlguard'),
    [string]$RigUser = "$env:USERDOMAIN\$env:USERNAME"
)
$ErrorActionPreference = 'Stop'

foreach ($dir in $ConfigDir, (Join-Path $ConfigDir 'state'), (Join-Path $ConfigDir 'logs')) {
    New-Item -ItemType Directory -Force -Path $dir | Out-Null
}
# The rig user owns the state: the worker, the supervisor and the sidecar all
# run as that user and write there.
icacls (Join-Path $ConfigDir 'state') /grant:r "${RigUser}:(OI)(CI)M" | Out-Null

$envFile = Join-Path $ConfigDir 'crawlguard.env'
if (-not (Test-Path $envFile)) {
    Copy-Item (Join-Path $PSScriptRoot 'crawlguard.env.example') $envFile
    Write-Host "wrote $envFile - edit the shards and the build command"
}

$token = Join-Path $ConfigDir 'sidecar.token'
if (-not (Test-Path $token)) {
    $bytes = New-Object byte[] 32
    [Security.Cryptography.RandomNumberGenerator]::Create().GetBytes($bytes)
    $hex = -join ($bytes | ForEach-Object { $_.ToString('x2') })
    Set-Content -Path $token -Value $hex -NoNewline -Encoding ascii
    Write-Host "wrote a new token to $token"
}
# S-1-5-18 = SYSTEM, S-1-5-32-544 = Administrators (SIDs: locale-independent).
icacls $token /inheritance:r /grant:r "${RigUser}:(R)" '*S-1-5-18:(F)' '*S-1-5-32-544:(F)' | Out-Null
Write-Host "token ACL:"; icacls $token

# Shard and stage names of up to 128 characters pass Windows' 260-character path
# limit under this state dir unless long paths are on; crawlguard then refuses
# long names at run time. To lift the limit (system-wide; needs elevation):
#   Set-ItemProperty HKLM:\SYSTEM\CurrentControlSet\Control\FileSystem LongPathsEnabled 1
$fs = Get-ItemProperty -Path 'HKLM:\SYSTEM\CurrentControlSet\Control\FileSystem' -ErrorAction SilentlyContinue
if (-not $fs -or $fs.LongPathsEnabled -ne 1) {
    Write-Host "note: LongPathsEnabled is off: shard/stage names are limited (docs/deploy.md#windows)"
}
