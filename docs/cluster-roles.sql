-- Least-privilege roles for an InferPool cluster (docs/cluster.md, "Trust: who may run what").
-- Run as the database owner in the cluster's database, after the schema exists (the first node, or any
-- 'inferpool' command run once as the owner, creates it). Then give each role a password and a pg_hba.conf line:
--   ALTER ROLE inferpool_node PASSWORD '…';
-- A test (ClusterRolesTests) runs this file and uses each role for what it is meant to do.

-- Nodes: Orleans membership, leasing and committing shards, results and refusals.
CREATE ROLE inferpool_node LOGIN;
GRANT SELECT, INSERT, UPDATE, DELETE ON orleansmembershiptable, orleansmembershipversiontable TO inferpool_node;
GRANT SELECT ON orleansquery, inferpool_schema, inferpool_jobs, inferpool_manifest TO inferpool_node;
GRANT UPDATE (state, error, columns) ON inferpool_jobs TO inferpool_node;
GRANT SELECT, UPDATE ON inferpool_shards TO inferpool_node;
GRANT SELECT, INSERT ON inferpool_results, inferpool_refusals TO inferpool_node;

-- Submitters: create jobs and their shards, cancel them, follow their progress.
CREATE ROLE inferpool_submitter LOGIN;
GRANT SELECT ON inferpool_schema, inferpool_results, inferpool_refusals TO inferpool_submitter;
GRANT SELECT, INSERT, UPDATE ON inferpool_jobs TO inferpool_submitter;
GRANT SELECT, INSERT ON inferpool_shards, inferpool_manifest TO inferpool_submitter;

-- Readers: results and progress only.
CREATE ROLE inferpool_reader LOGIN;
GRANT SELECT ON inferpool_schema, inferpool_jobs, inferpool_shards, inferpool_manifest, inferpool_results, inferpool_refusals TO inferpool_reader;
