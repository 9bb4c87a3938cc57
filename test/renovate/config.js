// Renovate's self-hosted (global) configuration for generating the fixtures: lookup only,
// a report file, nothing written anywhere. The platform, endpoint and repository come from
// generate.sh through RENOVATE_* environment variables, the report path through
// FIXTURE_REPORT_PATH (Renovate validates this file on its own, and a file report without
// a path is refused); what a fleet's owner configures (managers, file patterns, the regex
// manager) is the fleet's own renovate.json.
module.exports = {
  dryRun: 'lookup',
  reportType: 'file',
  reportPath: process.env.FIXTURE_REPORT_PATH,
  onboarding: false,
  requireConfig: 'optional',
  dependencyDashboard: false,
  repositoryCache: 'disabled',
  // The fixtures must show every update Renovate finds, not only the ones due today.
  prHourlyLimit: 0,
  prConcurrentLimit: 0,
};
