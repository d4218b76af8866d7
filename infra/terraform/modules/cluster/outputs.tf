output "manifests" {
  description = "Every Kubernetes manifest, in apply order: Kafka, KafkaNodePool, 4 KafkaTopics, 4 KafkaUsers, FlinkDeployment."
  value       = local.manifests
}

output "manifests_yaml" {
  description = "The same manifests as one multi-document YAML stream (kubectl apply -f -)."
  value       = join("", [for m in local.manifests : "---\n${yamlencode(m)}"])
}

output "kafka_bootstrap" {
  description = "Bootstrap address of the TLS + SCRAM-SHA-512 listener inside the cluster."
  value       = local.bootstrap
}

output "job_args" {
  description = "Arguments the FlinkDeployment passes to the PyFlink driver (-py, -pyfs, --config, --set ...)."
  value       = local.job_args
}

output "user_secrets" {
  description = "Secret (key \"password\", and \"sasl.jaas.config\") that Strimzi's User Operator writes for each role."
  value       = { for role, name in var.usernames : role => name }
}

output "acls" {
  description = "The ACL matrix, one entry per (role, resource, operation): the same as modules/kafka grants."
  value       = module.matrix.acls
}
