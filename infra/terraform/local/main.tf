# The local stack's root module: the kafka module against the broker started by
# infra/local/kafka.sh (SASL_SSL, SCRAM-SHA-512, super user admin). Run it through
# infra/terraform/provision.sh, which reads the broker's credentials folder and passes the
# secrets as TF_VAR_* environment variables.

provider "kafka" {
  bootstrap_servers = var.bootstrap_servers
  tls_enabled       = true
  skip_tls_verify   = false
  ca_cert           = var.ca_cert_file # a path or PEM text; the provider takes both
  sasl_mechanism    = "scram-sha512"
  sasl_username     = var.admin_username
  sasl_password     = var.admin_password
  kafka_version     = var.kafka_protocol_version
  timeout           = 60
}

module "kafka" {
  source = "../modules/kafka"

  broker_count                = var.broker_count
  replication_factor          = var.replication_factor
  min_insync_replicas         = var.min_insync_replicas
  topics                      = var.topics
  updates_partitions          = var.updates_partitions
  updates_retention_ms        = var.updates_retention_ms
  dlq_retention_ms            = var.dlq_retention_ms
  control_cleanup_policy      = var.control_cleanup_policy
  models_cleanup_policy       = var.models_cleanup_policy
  updates_max_message_bytes   = var.updates_max_message_bytes
  control_max_message_bytes   = var.control_max_message_bytes
  models_max_message_bytes    = var.models_max_message_bytes
  job_group                   = var.job_group
  job_transactional_id_prefix = var.job_transactional_id_prefix
  passwords = {
    job     = var.job_password
    device  = var.device_password
    owner   = var.owner_password
    auditor = var.auditor_password
  }
}
