# Plans of the kafka module against a mock provider: what it would create, and the input
# values its validations refuse. No broker is involved (tests/integration/
# test_terraform_kafka.py applies the module to a real one). Run: terraform test.

mock_provider "kafka" {}

variables {
  passwords = {
    job     = "job-password-0123456789"
    device  = "device-password-0123456789"
    owner   = "owner-password-0123456789"
    auditor = "auditor-password-0123456789"
  }
}

run "defaults" {
  command = plan

  assert {
    condition     = kafka_topic.this["updates"].name == "fl.updates" && kafka_topic.this["updates"].partitions == 2
    error_message = "fl.updates with 2 partitions by default"
  }
  assert {
    condition     = alltrue([for role in ["control", "models", "dlq"] : kafka_topic.this[role].partitions == 1])
    error_message = "control, models and dlq have one partition"
  }
  assert {
    condition     = kafka_topic.this["control"].config["retention.ms"] == "-1" && kafka_topic.this["models"].config["retention.ms"] == "-1"
    error_message = "control and models are kept forever"
  }
  assert {
    condition     = kafka_topic.this["control"].config["cleanup.policy"] == "compact" && kafka_topic.this["models"].config["cleanup.policy"] == "compact"
    error_message = "cleanup.policy defaults to compact (registrations and release chunks are keyed)"
  }
  assert {
    condition     = kafka_topic.this["updates"].config["retention.ms"] == "604800000" && kafka_topic.this["dlq"].config["retention.ms"] == "2592000000"
    error_message = "updates keep 7 days, dead letters 30 days"
  }
  assert {
    condition     = kafka_topic.this["dlq"].config["max.message.bytes"] == tostring(16777216 + 1048576)
    error_message = "the DLQ takes a maximal update plus 1 MiB"
  }
  assert {
    condition     = length(kafka_acl.this) == 36
    error_message = "36 ACLs: job 14, device 6, owner 5, auditor 11"
  }
  assert {
    condition     = kafka_topic.this["devices"].config["cleanup.policy"] == "compact" && kafka_topic.this["devices"].partitions == 1
    error_message = "the device registry is compacted, one partition"
  }
  assert {
    condition     = length([for a in kafka_acl.this : a if a.resource_name == "fl.devices" && a.acl_operation == "Write"]) == 0
    error_message = "no role writes the device registry (the operator is the super user)"
  }
  assert {
    condition     = alltrue([for a in kafka_acl.this : a.acl_permission_type == "Allow" && a.resource_type != "Cluster" && a.acl_host == "*"])
    error_message = "only Allow grants, none on the cluster"
  }
  assert {
    condition = toset([for a in kafka_acl.this : "${a.resource_type}:${a.resource_name}:${a.acl_operation}" if a.acl_principal == "User:device"]) == toset([
      "Topic:fl.updates:Write", "Topic:fl.updates:Describe", "Topic:fl.updates:DescribeConfigs", "Topic:fl.models:Read", "Topic:fl.models:Describe", "Group:fedstream-device:Read",
    ])
    error_message = "the device writes updates and reads models, nothing else"
  }
  assert {
    condition     = length([for a in kafka_acl.this : a if a.acl_principal == "User:auditor" && contains(["Write", "All", "Alter", "Delete", "Create"], a.acl_operation)]) == 0
    error_message = "the auditor never writes"
  }
  assert {
    condition     = kafka_acl.this["job:TransactionalID:Prefixed:fedstream-aggregator:Write"].resource_pattern_type_filter == "Prefixed"
    error_message = "the job's transactional ids are granted by prefix"
  }
  assert {
    condition     = alltrue([for u in kafka_user_scram_credential.role : u.scram_mechanism == "SCRAM-SHA-512" && u.scram_iterations == 8192])
    error_message = "one SCRAM-SHA-512 credential per role"
  }
  assert {
    condition     = length(kafka_user_scram_credential.role) == 4
    error_message = "four principals"
  }
}

run "three_brokers_compacted" {
  command = plan

  variables {
    broker_count           = 3
    replication_factor     = 3
    min_insync_replicas    = 2
    updates_partitions     = 12
    control_cleanup_policy = "compact"
    models_cleanup_policy  = "compact"
    dlq_headroom_bytes     = 0
  }

  assert {
    condition     = alltrue([for t in kafka_topic.this : t.replication_factor == 3 && t.config["min.insync.replicas"] == "2"])
    error_message = "replication settings reach every topic"
  }
  assert {
    condition     = kafka_topic.this["control"].config["cleanup.policy"] == "compact" && kafka_topic.this["updates"].partitions == 12
    error_message = "cleanup policy and partitions follow the variables"
  }
  assert {
    condition     = kafka_topic.this["dlq"].config["max.message.bytes"] == "16777216"
    error_message = "no headroom asked, none given"
  }
}

run "zero_partitions_refused" {
  command = plan
  variables {
    updates_partitions = 0
  }
  expect_failures = [var.updates_partitions]
}

run "replication_above_brokers_refused" {
  command = plan
  variables {
    broker_count       = 1
    replication_factor = 3
  }
  expect_failures = [var.replication_factor]
}

run "retention_below_minus_one_refused" {
  command = plan
  variables {
    updates_retention_ms = -2
  }
  expect_failures = [var.updates_retention_ms]
}

run "zero_dlq_retention_refused" {
  command = plan
  variables {
    dlq_retention_ms = 0
  }
  expect_failures = [var.dlq_retention_ms]
}

run "negative_headroom_refused" {
  command = plan
  variables {
    dlq_headroom_bytes = -1
  }
  expect_failures = [var.dlq_headroom_bytes]
}

run "unknown_cleanup_policy_refused" {
  command = plan
  variables {
    models_cleanup_policy = "compact,delete"
  }
  expect_failures = [var.models_cleanup_policy]
}

run "empty_topic_name_refused" {
  command = plan
  variables {
    topics = { updates = "", control = "fl.control", models = "fl.models", dlq = "fl.dlq" }
  }
  expect_failures = [var.topics]
}

run "shared_topic_name_refused" {
  command = plan
  variables {
    topics = { updates = "fl.x", control = "fl.x", models = "fl.models", dlq = "fl.dlq" }
  }
  expect_failures = [var.topics]
}

run "empty_user_name_refused" {
  command = plan
  variables {
    usernames = { job = "job", device = " ", owner = "owner", auditor = "auditor" }
  }
  expect_failures = [var.usernames]
}

run "short_password_refused" {
  command = plan
  variables {
    passwords = { job = "short", device = "device-password-0123456789", owner = "owner-password-0123456789", auditor = "auditor-password-0123456789" }
  }
  expect_failures = [var.passwords]
}

run "min_insync_above_replication_refused" {
  command = plan
  variables {
    min_insync_replicas = 2
  }
  expect_failures = [var.min_insync_replicas]
}

run "empty_transactional_prefix_refused" {
  command = plan
  variables {
    job_transactional_id_prefix = ""
  }
  expect_failures = [var.job_transactional_id_prefix]
}

run "zero_brokers_refused" {
  command = plan
  variables {
    broker_count = 0
  }
  expect_failures = [var.broker_count]
}
