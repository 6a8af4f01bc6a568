<#
.SYNOPSIS
    One-time setup of a Windows rig for crawlguard: folders, token, config.
.DESCRIPTION
    Creates %ProgramData%\crawlguard (config, state dir, logs), a random bearer
    token for the sidecar in sidecar.token, and crawlguard.env from the example
    next to this script when there is none yet.

    Every ACL is explicit, with nothing inherited (/inheritance:r), because
    %ProgramData%'s inherited entries let Users create files and folders below
    it: another local user could then plant shards\<x>\worker.json in the state
    dir and steer a rung at any of the rig user's processes, or read the token.
      - the config folder: SYSTEM and Administrators full control, the rig user
        read. It is restricted FIRST, so that everything created in it later
        (the token among them) takes these entries from its creation and is
        never readable by Users, not even for a moment;
      - state\ and logs\: the rig user Modify, SYSTEM and Administrators full
        control. crawlguard refuses at start a state dir anyone else may write;
      - sidecar.token: the rig user read, SYSTEM and Administrators full
        control: the Windows form of chmod 600.
    An existing token is kept (its ACL is set again) unless -NewToken is given:
    use it once after upgrading from a setup.ps1 that wrote the token before
    restricting it.
    Run it once, as an administrator, in an elevated shell.
#>
[CmdletBinding()]
param(
    [string]$ConfigDir = (Join-Path $env:ProgramData 'crawlguard'),
    [string]$RigUser = "$env:USERDOMAIN\$env:USERNAME",
    [switch]$NewToken
)
$ErrorActionPreference = 'Stop'

# S-1-5-18 = SYSTEM, S-1-5-32-544 = Administrators (SIDs: locale-independent).
$system = '*S-1-5-18'
$admins = '*S-1-5-32-544'
function Set-PrivateAcl([string]$path, [string]$userRights, [string]$inherit) {
    # /reset first: explicit entries from an earlier setup or by hand go too; then
    # nothing inherited, and exactly these three grants.
    & icacls $path /reset /Q | Out-Null
    if ($LASTEXITCODE -ne 0) { throw "icacls $path /reset failed ($LASTEXITCODE)" }
    & icacls $path /inheritance:r /grant:r "${RigUser}:${inherit}${userRights}" `
        "${system}:${inherit}(F)" "${admins}:${inherit}(F)" /Q | Out-Null
    if ($LASTEXITCODE -ne 0) { throw "icacls $path /inheritance:r failed ($LASTEXITCODE)" }
}

New-Item -ItemType Directory -Force -Path $ConfigDir | Out-Null
Set-PrivateAcl $ConfigDir '(RX)' '(OI)(CI)'
# The rig user owns the state: the worker, the supervisor and the sidecar all
# run as that user and write there.
foreach ($dir in (Join-Path $ConfigDir 'state'), (Join-Path $ConfigDir 'logs')) {
    New-Item -ItemType Directory -Force -Path $dir | Out-Null
    Set-PrivateAcl $dir '(M)' '(OI)(CI)'
}

$envFile = Join-Path $ConfigDir 'crawlguard.env'
if (-not (Test-Path $envFile)) {
    Copy-Item (Join-Path $PSScriptRoot 'crawlguard.env.example') $envFile
    Write-Host "wrote $envFile - edit the shards and the build command"
}

$token = Join-Path $ConfigDir 'sidecar.token'
if ($NewToken -or -not (Test-Path $token)) {
    if (Test-Path $token) { Remove-Item -Force $token }
    $bytes = New-Object byte[] 32
    [Security.Cryptography.RandomNumberGenerator]::Create().GetBytes($bytes)
    $hex = -join ($bytes | ForEach-Object { $_.ToString('x2') })
    # Created inside the restricted folder: its inherited entries are the folder's.
    Set-Content -Path $token -Value $hex -NoNewline -Encoding ascii
    Write-Host "wrote a new token to $token"
}
Set-PrivateAcl $token '(R)' ''

# Until now (a first setup's moment between New-Item and icacls, or an older setup
# that left the folders open to Users) someone else could have created files here.
# Anything owned by another user is refused: delete it after a look.
$sid = [System.Security.Principal.SecurityIdentifier]
$trusted = @('S-1-5-18', 'S-1-5-32-544',
    (New-Object System.Security.Principal.NTAccount($RigUser)).Translate($sid).Value,
    [System.Security.Principal.WindowsIdentity]::GetCurrent().User.Value)
$foreign = @(Get-ChildItem -LiteralPath $ConfigDir -Recurse -Force | Where-Object {
        (Get-Acl -LiteralPath $_.FullName).GetOwner($sid).Value -notin $trusted })
if ($foreign.Count -gt 0) {
    throw ("owned by another user (planted while the folder was open?): " +
        (($foreign | ForEach-Object { $_.FullName }) -join ', '))
}
Write-Host "ACLs (no entry may be marked (I), inherited):"
& icacls $ConfigDir (Join-Path $ConfigDir 'state') $token

# Shard and stage names of up to 128 characters pass Windows' 260-character path
# limit under this state dir unless long paths are on; crawlguard then refuses
# long names at run time. To lift the limit (system-wide; needs elevation):
#   Set-ItemProperty HKLM:\SYSTEM\CurrentControlSet\Control\FileSystem LongPathsEnabled 1
$fs = Get-ItemProperty -Path 'HKLM:\SYSTEM\CurrentControlSet\Control\FileSystem' -ErrorAction SilentlyContinue
if (-not $fs -or $fs.LongPathsEnabled -ne 1) {
    Write-Host "note: LongPathsEnabled is off: shard/stage names are limited (docs/deploy.md#windows)"
}
