#Requires -Version 7.4
# Every exported cmdlet is checked against the module's conventions (exports, output types and format views,
# ShouldProcess, complete help from the MAML, help markdown that agrees with the real parameters and is parsed as the
# build parses it, a Pester suite), as dbatools does for all of its commands.

BeforeDiscovery {
    Import-Module (Join-Path $PSScriptRoot 'PgBackup.TestCluster.psm1') -Force
    $knownCmdlets = @(Get-PgTestKnownCmdlet)
    $cmdletCases = @($knownCmdlets | ForEach-Object { @{ CommandName = $_ } })
}

Describe 'PgBackup module conventions' {
    BeforeAll {
        Import-Module (Join-Path $PSScriptRoot 'PgBackup.TestCluster.psm1') -Force
        $manifest = Get-PgBackupModuleManifest
        Import-Module $manifest -Force
        $environment = Enter-PgTestEnvironment
        $repositoryRoot = Get-PgTestRepositoryRoot
        $module = Get-Module -Name PgBackup
        $moduleBase = $module.ModuleBase
        $formatFile = Join-Path $moduleBase 'PgBackup.Format.ps1xml'
        $mamlFile = Join-Path $moduleBase 'en-US' 'PgBackup.dll-Help.xml'
        $commonParameters = @([System.Management.Automation.Cmdlet]::CommonParameters) + @([System.Management.Automation.Cmdlet]::OptionalCommonParameters)

        # The parameters a user types and the help must document: all but the common ones, WhatIf and Confirm included.
        function Get-RealParameter([string] $Name) {
            (Get-Command -Name $Name -Module PgBackup).Parameters.Keys |
                Where-Object { $_ -notin $commonParameters -or $_ -in 'WhatIf', 'Confirm' }
        }

        # Text of a help description: an array of objects with a Text property, or plain strings.
        function Get-HelpText([object] $Value) {
            @($Value | ForEach-Object {
                    if ($null -ne $_ -and $_.PSObject.Properties['Text']) { [string] $_.Text } else { [string] $_ }
                } | Where-Object { $_.Trim().Length -gt 0 })
        }

        # The ## PARAMETERS section of a PlatyPS markdown file: one '### -Name' heading per parameter, then one ```yaml
        # block per parameter set. Required, Accept wildcard characters and Accept pipeline input are taken from the first
        # block, as tools/PgBackup.HelpGen does.
        function Read-MarkdownParameter([string] $Path) {
            $parameters = [System.Collections.Generic.List[object]]::new()
            $current = $null
            $inParameters = $false
            $inFence = $false
            $fenceIsYaml = $false
            $blocks = 0
            foreach ($line in Get-Content -LiteralPath $Path) {
                if ($line -match '^\s*```\s*([^`\s]*)') {
                    if (-not $inFence) {
                        $inFence = $true
                        $fenceIsYaml = $Matches[1] -eq 'yaml'
                    }
                    else {
                        $inFence = $false
                        if ($fenceIsYaml -and $null -ne $current) { $blocks++ }
                    }
                    continue
                }
                if ($inFence) {
                    if ($fenceIsYaml -and $inParameters -and $null -ne $current) {
                        if ($line -match '^Parameter Sets:\s*(.*)$') {
                            foreach ($set in $Matches[1] -split ',') {
                                $set = $set.Trim()
                                if ($set -eq '__AllParameterSets') { $set = '(All)' }
                                if ($set) { $current.ParameterSets.Add($set) }
                            }
                        }
                        elseif ($blocks -eq 0 -and $line -match '^Required:\s*(\S+)') { $current.Required = $Matches[1] -eq 'True' }
                        elseif ($blocks -eq 0 -and $line -match '^Accept wildcard characters:\s*(\S+)') { $current.AcceptWildcardCharacters = $Matches[1] -eq 'True' }
                        elseif ($blocks -eq 0 -and $line -match '^Accept pipeline input:\s*(.*?)\s*$') { if ($Matches[1]) { $current.AcceptPipelineInput = $Matches[1] } }
                    }
                    continue
                }
                if ($line -match '^##\s+(.+?)\s*$') {
                    $inParameters = $Matches[1] -eq 'PARAMETERS'
                    $current = $null
                    continue
                }
                if (-not $inParameters) { continue }
                if ($line -match '^###\s+-(\w+)\s*$') {
                    $current = [pscustomobject]@{
                        Name                     = $Matches[1]
                        ParameterSets            = [System.Collections.Generic.List[string]]::new()
                        Required                 = $false
                        AcceptWildcardCharacters = $false
                        AcceptPipelineInput      = 'False'
                    }
                    $parameters.Add($current)
                    $blocks = 0
                }
                elseif ($line -match '^###\s') { $current = $null } # ### CommonParameters
            }
            $parameters.ToArray()
        }
    }

    AfterAll {
        Exit-PgTestEnvironment -State $environment
    }

    It 'exports exactly the compiled cmdlets, and the list of known cmdlets is complete' -ForEach @(@{ Known = $knownCmdlets }) {
        $exported = @($module.ExportedCmdlets.Keys | Sort-Object)
        $compiled = @($module.ImplementingAssembly.GetTypes() | ForEach-Object {
                $attribute = $_.GetCustomAttributes([System.Management.Automation.CmdletAttribute], $false)
                if ($attribute) { "$($attribute[0].VerbName)-$($attribute[0].NounName)" }
            } | Sort-Object)
        ($exported -join ',') | Should -BeExactly ($compiled -join ',')
        ($compiled -join ',') | Should -BeExactly ((@($Known) | Sort-Object) -join ',') -Because 'a new cmdlet must be added to Get-PgTestKnownCmdlet (tests/pester/PgBackup.TestCluster.psm1) and get its tests'
    }

    It 'has a version that matches its folder and the build' {
        $version = $module.Version.ToString()
        Split-Path -Leaf $moduleBase | Should -BeExactly $version
        Get-Content -LiteralPath (Join-Path $repositoryRoot 'Directory.Build.props') -Raw | Should -BeLikeExactly "*<ModuleVersion>$version</ModuleVersion>*"
    }

    It 'loads the engine and Npgsql into the private context, and its result types are public' {
        $null = Get-PgBackupConfig -Name Repository -ErrorAction Stop
        $contexts = @([System.Runtime.Loader.AssemblyLoadContext]::All | Where-Object { $_.Name -eq 'PgBackup.Dependencies' })
        $contexts | Should -HaveCount 1
        $privateAssemblies = @($contexts[0].Assemblies | ForEach-Object { $_.GetName().Name })
        $privateAssemblies | Should -Contain 'PgBackup.Engine'
        $privateAssemblies | Should -Contain 'Microsoft.Extensions.Configuration'
        $defaultAssemblies = @([System.Runtime.Loader.AssemblyLoadContext]::Default.Assemblies | ForEach-Object { $_.GetName().Name })
        $defaultAssemblies | Should -Not -Contain 'PgBackup.Engine'
        $defaultAssemblies | Should -Not -Contain 'Npgsql'
        [PgBackup.DumpBackup].FullName | Should -BeExactly 'PgBackup.DumpBackup'
        Test-Path -LiteralPath (Join-Path $moduleBase 'Dependencies' 'Npgsql.dll') -PathType Leaf | Should -BeTrue
        Test-Path -LiteralPath (Join-Path $moduleBase 'Npgsql.dll') | Should -BeFalse
    }

    It '<CommandName> declares its output type and has a format view for it' -ForEach $cmdletCases {
        $command = Get-Command -Name $CommandName -Module PgBackup
        $command.OutputType | Should -Not -BeNullOrEmpty
        $viewed = @(Select-Xml -LiteralPath $formatFile -XPath '//TypeName' | ForEach-Object { $_.Node.InnerText.Trim() })
        foreach ($type in @($command.OutputType.Name | Where-Object { $_.StartsWith('PgBackup.') })) {
            $viewed | Should -Contain $type -Because "$CommandName returns $type"
        }
    }

    It '<CommandName> supports ShouldProcess unless it only reads' -ForEach $cmdletCases {
        $command = Get-Command -Name $CommandName -Module PgBackup
        $attribute = $command.ImplementingType.GetCustomAttributes([System.Management.Automation.CmdletAttribute], $false)[0]
        if ($CommandName.StartsWith('Get-') -or $CommandName -in 'Test-PgReplication', 'Wait-PgReplication') { $attribute.SupportsShouldProcess | Should -BeFalse -Because "$CommandName only reads" }
        else { $attribute.SupportsShouldProcess | Should -BeTrue -Because "$CommandName changes files or servers" }
    }

    It '<CommandName> has complete help from the MAML' -ForEach $cmdletCases {
        $help = Get-Help -Name $CommandName -Full -ErrorAction Stop
        $help | Should -HaveCount 1
        $help.PSObject.TypeNames | Where-Object { $_.StartsWith('MamlCommandHelpInfo') } |
            Should -Not -BeNullOrEmpty -Because 'the help must come from en-US/PgBackup.dll-Help.xml, not be generated by PowerShell'
        "$($help.Synopsis)".Trim() | Should -Not -BeNullOrEmpty
        "$($help.Synopsis)".Contains("$CommandName [") | Should -BeFalse -Because "PowerShell's generated stub repeats the syntax as synopsis"
        Get-HelpText $help.description | Should -Not -BeNullOrEmpty

        $documented = @{}
        foreach ($parameter in @($help.parameters.parameter)) {
            if ($null -ne $parameter) { $documented[[string] $parameter.name] = (Get-HelpText $parameter.description) -join ' ' }
        }
        foreach ($parameter in Get-RealParameter $CommandName) {
            $documented.ContainsKey($parameter) | Should -BeTrue -Because "$CommandName -$parameter has no help"
            $documented[$parameter] | Should -Not -BeNullOrEmpty -Because "$CommandName -$parameter has an empty description"
        }

        $examples = @((Get-Help -Name $CommandName -Examples -ErrorAction Stop).examples.example)
        $examples | Should -Not -BeNullOrEmpty
        foreach ($example in $examples) {
            "$($example.code)".Contains($CommandName) | Should -BeTrue -Because "every example of $CommandName uses it: $($example.code)"
        }
    }

    It '<CommandName>: the markdown, the MAML and the real parameters agree' -ForEach $cmdletCases {
        $markdown = @(Read-MarkdownParameter (Join-Path $repositoryRoot 'docs' 'help' "$CommandName.md"))
        $real = @(Get-RealParameter $CommandName)
        (@($markdown.Name | Sort-Object) -join ',') | Should -BeExactly (@($real | Sort-Object) -join ',')

        $command = Get-Command -Name $CommandName -Module PgBackup
        foreach ($documented in $markdown) {
            $parameter = $command.Parameters[$documented.Name]
            $parameter.ParameterSets.Keys | Should -Not -BeNullOrEmpty
            $realSets = @($parameter.ParameterSets.Keys | Where-Object { $_ -ne '__AllParameterSets' } | Sort-Object)
            if ($realSets.Count -gt 0 -and '(All)' -notin $documented.ParameterSets) {
                (@($documented.ParameterSets | Sort-Object) -join ',') | Should -BeExactly ($realSets -join ',') -Because "-$($documented.Name) is in these parameter sets"
            }
            $mandatory = @($parameter.ParameterSets.Values | Where-Object { $_.IsMandatory }).Count -gt 0
            $mandatory | Should -Be $documented.Required -Because "$CommandName -$($documented.Name): Required is $($documented.Required) in the markdown, $mandatory in the code"
            $wildcards = @($parameter.Attributes | Where-Object { $_ -is [System.Management.Automation.SupportsWildcardsAttribute] }).Count -gt 0
            $wildcards | Should -Be $documented.AcceptWildcardCharacters -Because "$CommandName -$($documented.Name): Accept wildcard characters is $($documented.AcceptWildcardCharacters) in the markdown, $wildcards in the code"
            $byValue = @($parameter.ParameterSets.Values | Where-Object { $_.ValueFromPipeline }).Count -gt 0
            $byName = @($parameter.ParameterSets.Values | Where-Object { $_.ValueFromPipelineByPropertyName }).Count -gt 0
            $pipelineAgrees = $byValue -eq $documented.AcceptPipelineInput.Contains('ByValue') -and $byName -eq $documented.AcceptPipelineInput.Contains('ByPropertyName')
            $pipelineAgrees | Should -BeTrue -Because "$CommandName -$($documented.Name): Accept pipeline input is '$($documented.AcceptPipelineInput)' in the markdown; the code says ByValue=$byValue, ByPropertyName=$byName"
        }

        $namespaces = @{ command = 'http://schemas.microsoft.com/maml/dev/command/2004/10'; maml = 'http://schemas.microsoft.com/maml/2004/10' }
        $entry = @(Select-Xml -LiteralPath $mamlFile -Namespace $namespaces -XPath "//command:command[normalize-space(command:details/command:name) = '$CommandName']")
        $entry | Should -HaveCount 1
        $mamlParameters = @(Select-Xml -Xml $entry[0].Node -Namespace $namespaces -XPath 'command:parameters/command:parameter/maml:name' |
                ForEach-Object { $_.Node.InnerText.Trim() })
        (@($mamlParameters | Sort-Object) -join ',') | Should -BeExactly (@($markdown.Name | Sort-Object) -join ',')
    }

    It '<CommandName> has a Pester suite' -ForEach $cmdletCases {
        $pesterSuites = Get-ChildItem -LiteralPath $PSScriptRoot -Filter '*.Tests.ps1' |
            Where-Object Name -ne 'Module.Tests.ps1' |
            ForEach-Object { Get-Content -LiteralPath $_.FullName -Raw }
        $pesterSuites | Where-Object { $_ -cmatch "(?m)^\s*[^#\r\n]*\b$([regex]::Escape($CommandName)) " } |
            Should -Not -BeNullOrEmpty -Because "$CommandName must be run by a Pester suite in tests/pester, not only named in a comment"
    }

    It 'docs/reliability.md names only tests that exist, and every test of Faults.Tests.ps1' {
        $document = Get-Content -LiteralPath (Join-Path $repositoryRoot 'docs' 'reliability.md')
        $named = @($document | ForEach-Object {
                if ($_ -match '^\|.*\| `(?<file>[^`]+)` › (?<name>.+?) \|\s*$') { [pscustomobject]@{ File = $Matches.file; Name = $Matches.name } }
            })
        $named.Count | Should -BeGreaterThan 20 -Because 'the matrix has a row per fault and operation'
        foreach ($reference in $named) {
            $path = @((Join-Path $PSScriptRoot $reference.File), (Join-Path $repositoryRoot 'tests' 'PgBackup.Engine.Tests' $reference.File)) |
                Where-Object { Test-Path -LiteralPath $_ -PathType Leaf } | Select-Object -First 1
            $path | Should -Not -BeNullOrEmpty -Because "docs/reliability.md names the test file $($reference.File)"
            (Get-Content -LiteralPath $path -Raw).Contains($reference.Name) | Should -BeTrue -Because "docs/reliability.md names '$($reference.Name)' in $($reference.File)"
        }
        $itPattern = '(?m)^\s*It (?:''(?<single>(?:[^'']|'''')+)''|"(?<double>[^"]+)")'
        $faultTests = @([regex]::Matches((Get-Content -LiteralPath (Join-Path $PSScriptRoot 'Faults.Tests.ps1') -Raw), $itPattern) | ForEach-Object {
                if ($_.Groups['single'].Success) { $_.Groups['single'].Value.Replace("''", "'") } else { $_.Groups['double'].Value }
            })
        $faultTests.Count | Should -BeGreaterThan 10
        foreach ($test in $faultTests) {
            @($named | Where-Object { $_.File -eq 'Faults.Tests.ps1' -and $_.Name -eq $test }) | Should -Not -BeNullOrEmpty -Because "every fault test is a row of docs/reliability.md: '$test'"
        }
    }

    It 'has an about topic' {
        $about = Get-Help -Name about_PgBackup -ErrorAction Stop
        ($about | Out-String) | Should -BeLikeExactly '*PgBackup*'
    }
}
